-- End to end: many actions at once on a worker's event loop. The handlers
-- wait on the stand-in's /dev/slow (a service answering after ?ms=), which
-- counts how many of its requests wait at the same time (slow_peak).
local testing = require "flyte.testing"
local core = require "flyte.core"

local PACK = "spec/fixtures/host/waits.lua"

local function stats(api)
  local status, body = testing.get(api.url .. "/dev/stats")
  assert.equal(200, status)
  return assert(core.json_decode(body))
end

describe("many actions at once", function()
  local api, host

  before_each(function()
    api = testing.api()
    host = testing.host(PACK, api, { FLYTE_WORKERS = 2 })
    api:wait_registration()
  end)

  after_each(function()
    if host then host:stop() end
    if api then api:stop() end
  end)

  local function run(command, input, timeout)
    return api:wait_result(api:enqueue(command, input), timeout)
  end

  it("runs 200 handlers that each wait 100 ms on HTTP at the same time",
    function()
      local url = api.url .. "/dev/slow?ms=100"
      local started = core.monotime()
      local ids = {}
      for i = 1, 200 do ids[i] = api:enqueue("fetch", { url = url }) end
      for _, id in ipairs(ids) do
        local result = api:wait_result(id, 20)
        assert.same({ status = 200 }, result.payload)
      end
      local seconds = core.monotime() - started
      -- one at a time on two workers this takes 10 s; the waits overlap
      assert.is_true(stats(api).slow_peak >= 50,
        "at most " .. stats(api).slow_peak .. " requests waited at once")
      assert.is_true(seconds < 5, "took " .. seconds .. " s")
    end)

  it("keeps the connections of 200 requests at once for the next 200",
    function()
      -- a worker's cache holds as many connections as it may run requests
      -- at once; one of 64 closed each as its transfer ended (11,000
      -- connections for 4,000 such actions instead of 300). One worker,
      -- so that both waves land on the same cache, and waits long enough
      -- that each wave's 200 requests all overlap even under the
      -- sanitizers (slow_peak says so): the second wave then needs no
      -- connection the first did not leave behind.
      host:stop()
      host = testing.host(PACK, api, { FLYTE_WORKERS = 1 })
      api:wait_registration()
      local url = api.url .. "/dev/slow?ms=400"
      local function wave()
        local first, last = api:enqueue("fetch", { url = url }, nil,
          { count = 200 })
        for id = first, last do
          assert.same({ status = 200 }, api:wait_result(id, 20).payload)
        end
      end
      wave()
      local after = stats(api)
      assert.equal(200, after.slow_peak)
      wave()
      local again = stats(api).connections - after.connections
      assert.is_true(again <= 16, "the second 200 requests opened " .. again
        .. " connections (the first " .. after.connections .. ")")
    end)

  it("runs five requests at once within one action with flyte.spawn",
    function()
      local result = run("fan_out", { n = 5, url = api.url
        .. "/dev/slow?ms=300" })
      assert.same({ event = "Done", payload = { statuses = { 200, 200, 200,
        200, 200 } } }, { event = result.event, payload = result.payload })
      assert.equal(5, stats(api).slow_peak)
    end)

  it("runs a program with flyte.exec: status, stdout, stderr, stdin",
    function()
      local result = run("run", { stdin = "hello", cmd = { "sh", "-c",
        "cat; echo oops >&2; exit 3" } })
      assert.same({ status = 3, stdout = "hello", stderr = "oops\n",
        truncated = false }, result.payload)
    end)

  it("kills a program at its timeout and says so", function()
    local result = run("run", { cmd = { "sleep", "30" }, timeout = 0.2 })
    assert.equal("Failed", result.event)
    assert.matches("timed out after 0.2", result.payload.error)
  end)

  it("answers FATAL at the deadline of a handler waiting on HTTP inside "
    .. "pcall", function()
    local started = core.monotime()
    local result = run("stubborn", { url = api.url .. "/dev/slow?ms=8000" })
    assert.equal("FATAL", result.event)
    assert.equal("command 'stubborn' timed out after 1 s", result.payload)
    assert.is_true(core.monotime() - started < 5)
  end)

  it("lets flyte.http work inside the pack's own coroutine.wrap", function()
    local result = run("generator", { url = api.url .. "/dev/slow?ms=1" })
    assert.same({ statuses = { 200, 200, 200 } }, result.payload)
  end)

  it("raises a clear error where waiting is impossible", function()
    local result = run("sort_wait")
    assert.is_false(result.payload.ok)
    assert.matches("flyte.sleep cannot wait here", result.payload.error)
  end)

  it("stops an endless loop inside pcall inside table.sort", function()
    local result = run("sort_spin")
    assert.equal("FATAL", result.event)
    assert.equal("command 'sort_spin' timed out after 1 s", result.payload)
    -- and the worker takes the next action
    assert.same({ slept = true }, run("nap", { seconds = 0 }).payload)
  end)

  it("finishes every sleeping action on SIGTERM, then exits 0", function()
    local ids = {}
    for i = 1, 20 do ids[i] = api:enqueue("nap", { seconds = 1 }) end
    testing.wait(function()
      return stats(api).pending == 20
    end, 10, "20 actions taken")
    host:signal("TERM")
    for _, id in ipairs(ids) do
      assert.same({ slept = false }, api:wait_result(id).payload)
    end
    assert.equal(0, host:wait_exit(10))
    host = nil
  end)
end)

describe("a reload while handlers sleep", function()
  it("lets them sleep on: only observe sees false", function()
    local dir = testing.tmpdir()
    local pack = dir .. "/waits.lua"
    assert(os.execute("cp " .. PACK .. " " .. pack))
    local api = testing.api()
    local host = testing.host(pack, api, { FLYTE_WORKERS = 1 })
    finally(function() host:stop(); api:stop() end)
    api:wait_registration()
    local id = api:enqueue("nap", { seconds = 1.5 })
    testing.wait(function() return api:action(id).state == "PENDING" end, 5,
      "the action to be taken")
    host:signal("HUP")
    host:wait_log("reloaded [^\n]+")
    assert.same({ slept = true }, api:wait_result(id).payload)
  end)
end)
