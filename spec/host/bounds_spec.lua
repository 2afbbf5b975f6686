-- Bounds that keep a misbehaving API or pack from taking the host down:
-- the event queue, health checks that hang, a pack holding many files.
local testing = require "flyte.testing"
local flyte = require "flyte"

describe("bounds", function()
  local api, host

  lazy_setup(function()
    api = testing.api()
    host = testing.host("spec/fixtures/host/flood.lua", api,
      { FLYTE_OUTBOX = "off", FLYTE_API_TIMEOUT = "1" })
    api:wait_registration()
  end)

  lazy_teardown(function()
    host:stop()
    api:stop()
  end)

  it("refuses events past the queue's bound with nil and a message", function()
    -- the API refuses events for now: they pile up in the queue
    api:fault { route = "event", status = 503, count = 1000 }
    local result = api:wait_result(api:enqueue("flood", 10005))
    assert.same({ refused = 5,
      error = "event queue full (10000 events waiting for the flyte-api)" }, result.payload)
    api:clear_faults()
  end)

  it("cuts off a health check that hangs and reports it unhealthy", function()
    local core = require "flyte.core"
    local t0 = core.monotime()
    local status, body = testing.get(host.health_url, 15)
    assert.equal(500, status)
    assert.same({ healthy = false, status = "check timed out after 5 s" },
      flyte.json.decode(body).Hangs)
    assert.is_true(core.monotime() - t0 < 8)
  end)
end)

describe("a host with more than 1024 files open", function()
  -- select() cannot watch a descriptor past 1023: the health server must
  -- not use it. Each of the host's two states (one worker, one for health
  -- checks) holds 1,100 files.
  local p = assert(io.popen("ulimit -n"))
  local limit = p:read("a")
  p:close()
  if limit:match("unlimited") == nil and (tonumber(limit) or 0) < 4000 then
    pending("needs `ulimit -n` of 4000 or more (it is " .. limit:gsub("%s", "") .. ")")
    return
  end
  local api, host

  lazy_setup(function()
    api = testing.api()
    host = testing.host("spec/fixtures/host/many_files.lua", api,
      { FLYTE_OUTBOX = "off", FLYTE_WORKERS = 1 })
    api:wait_registration()
  end)

  lazy_teardown(function()
    host:stop()
    api:stop()
  end)

  it("still answers health checks and actions", function()
    local status, body = testing.get(host.health_url)
    assert.equal(200, status, body)
    assert.same({ held = 1100 }, api:wait_result(api:enqueue("count", {})).payload)
  end)
end)

describe("a take reply larger than the host keeps (8 MiB)", function()
  it("still ends its action, with a FATAL naming the size", function()
    local api = testing.api()
    local host = testing.host("spec/fixtures/host/cases.lua", api,
      { FLYTE_WORKERS = 1 })
    finally(function()
      host:stop()
      api:stop()
    end)
    api:wait_registration()
    -- a 20 MB input: the stand-in sends it before the links
    local res = assert(flyte.http.request { method = "POST",
      url = api.url .. "/dev/actions",
      body = { command = "echo", input_pad = 20000000 } })
    assert.equal(201, res.status, res.body)
    local id = flyte.json.decode(res.body).id
    local result = api:wait_result(id, 30)
    assert.equal("FATAL", result.event)
    assert.matches("command 'echo': the action's input cannot be decoded: "
      .. "the take reply is 2000%d+ bytes, over the host's limit of "
      .. "8388608 bytes on a reply; the input was not read", result.payload)
    assert.matches("take: a reply of 2000%d+ bytes, over the host's limit "
      .. "of 8388608 bytes: its action ends FATAL", host:log())
    -- and the host goes on
    assert.same({ n = 1 }, api:wait_result(api:enqueue("echo", { n = 1 }))
      .payload)
  end)
end)
