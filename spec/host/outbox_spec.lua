-- The outbox: an action the host took always ends with a result, even
-- across a crash; several hosts share one queue and one outbox.
local testing = require "flyte.testing"

local PACK = "spec/fixtures/host/cases.lua"

local tmpdir = testing.tmpdir

describe("the outbox", function()
  local api, dir

  before_each(function()
    api = testing.api()
    dir = tmpdir()
  end)

  after_each(function()
    api:stop()
    os.execute("rm -rf " .. dir)
  end)

  it("gets a FATAL posted for an action whose host was killed mid-handler", function()
    local outbox = dir .. "/outbox"
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    api:wait_registration()
    local id = api:enqueue("wait", { file = dir .. "/never" }, "Cases.team.ops")
    testing.wait(function() return api:action(id).state == "PENDING" end, 5, "the action")
    -- the host writes the action down just after taking it: kill it after
    -- that (a crash between the take's reply and that write loses the
    -- action, as a lost take reply does)
    testing.wait(function()
      local p = assert(io.popen("ls " .. outbox .. "/slot-0 2>/dev/null"))
      local names = p:read("a")
      p:close()
      return names:match("%d+%-a%.json")
    end, 10, "the action's outbox entry")
    host:signal("KILL")
    host:wait_exit()
    assert.equal("PENDING", api:action(id).state)

    local again = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    local result = api:wait_result(id)
    assert.same({ "FATAL", "command 'wait': the host stopped while handling this "
      .. "action; it was not run again (its side effects may have happened)" },
      { result.event, result.payload })
    again:wait_log("outbox: 1 entry from a host that stopped: 1 delivered, 0 kept")
    assert.equal(0, again:stop())
  end)

  it("takes a left-over result the API already has as delivered, and goes on", function()
    -- a result that reached the API, though the host that sent it did not
    -- hear back before it died: the API answers 500 (not PENDING)
    local first = testing.host(PACK, api, { FLYTE_OUTBOX = "off" })
    api:wait_registration()
    local done = api:enqueue("echo", "first", "Cases.team.ops")
    api:wait_result(done)
    assert.equal(0, first:stop())
    local outbox = dir .. "/outbox"
    os.execute("mkdir -p " .. outbox .. "/slot-0")
    local f = assert(io.open(outbox .. "/slot-0/000000000001-a.json", "w"))
    f:write(require("flyte").json.encode { kind = "result", command = "echo",
      action = tostring(done),
      result_url = api.url .. "/v1/packs/Cases.team.ops/actions/" .. done .. "/result",
      body = '{"event":"Echoed","payload":"again","createdAt":"2026-11-28T00:00:00Z"}' })
    f:close()
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    host:wait_log("taking it as delivered by that try", 20)
    assert.equal("first", api:action(done).result.payload)
    assert.equal("Echoed", api:wait_result(api:enqueue("echo", 2, "Cases.team.ops")).event)
    assert.equal(0, host:stop())
  end)

  it("is empty after a clean run", function()
    local outbox = dir .. "/outbox"
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    api:wait_registration()
    api:wait_result(api:enqueue("send", 1, "Cases.team.ops"))
    api:wait_events(1)
    assert.equal(0, host:stop())
    local p = assert(io.popen("ls " .. outbox .. "/slot-0"))
    assert.equal("lock", p:read("a"):gsub("%s+$", ""))
    p:close()
  end)

  it("sets a corrupt entry aside and starts anyway", function()
    local outbox = dir .. "/outbox"
    os.execute("mkdir -p " .. outbox .. "/slot-0")
    local f = assert(io.open(outbox .. "/slot-0/000000000001-a.json", "w"))
    f:write("{half an entr")
    f:close()
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = outbox })
    host:wait_log("outbox entry [^\n]*000000000001%-a%.json is corrupt")
    assert.truthy(io.open(outbox .. "/slot-0/000000000001-a.json.corrupt"))
    assert.equal("Echoed", api:wait_result(api:enqueue("echo", 1, "Cases.team.ops")).event)
    assert.equal(0, host:stop())
  end)

  it("can be turned off", function()
    local host = testing.host(PACK, api, { FLYTE_OUTBOX = "off" })
    api:wait_registration()
    assert.equal("Echoed", api:wait_result(api:enqueue("echo", 1, "Cases.team.ops")).event)
    assert.equal(0, host:stop())
  end)
end)

describe("three hosts running the same pack", function()
  it("complete each action of their shared queue exactly once", function()
    local api = testing.api()
    local dir = tmpdir()
    local hosts = {}
    for i = 1, 3 do
      -- one outbox directory: each host holds a slot of its own
      hosts[i] = testing.host(PACK, api, { FLYTE_OUTBOX = dir .. "/outbox",
        FLYTE_WORKERS = 2 })
    end
    testing.wait(function()
      local packs = api:state().packs
      return packs[1] and packs[1].registrations == 3
    end, 10, "three registrations")
    local ids = {}
    for i = 1, 90 do ids[i] = api:enqueue("echo", i) end
    for i = 1, 90 do assert.equal(i, api:wait_result(ids[i], 20).payload) end
    local took = 0
    for i = 1, 3 do
      assert.equal(0, hosts[i]:stop())
      local n = select(2, hosts[i]:log():gsub("action %d+: echo %-> Echoed", ""))
      took = took + n
    end
    -- every action completed once: the stand-in refuses a second result
    assert.equal(90, took)
    for _, a in ipairs(api:state().actions) do assert.equal("DONE", a.state) end
    api:stop()
    os.execute("rm -rf " .. dir)
  end)
end)
