-- End to end: a handler stuck where the hook cannot reach it (C code of
-- the pack, a finalizer) still ends at its deadline, from outside: the
-- host completes it with a FATAL, replaces the stuck worker so that
-- capacity comes back, counts it in /metrics, and /live fails once as
-- many threads are stuck as there are workers.
local testing = require "flyte.testing"
local core = require "flyte.core"

local PACK = "spec/fixtures/host/stuck.lua"

local function get(host, path)
  local status, body = testing.get(host.health_url .. path:sub(2))
  return status, body
end

local function stuck_gauge(host)
  local status, body = get(host, "/metrics")
  assert.equal(200, status)
  return tonumber(body:match("\nflyte_workers_stuck (%d+)"))
end

-- A stand-in API and a host of the stuck pack, registered; both stop when
-- the test ends.
local function start(settings)
  local api = testing.api()
  local host = testing.host(PACK, api, settings)
  finally(function()
    host:stop()
    api:stop()
  end)
  api:wait_registration()
  return api, host
end

describe("a handler stuck where the hook cannot reach", function()
  it("ends FATAL at its deadline; the worker is replaced; /live fails "
    .. "once every worker is stuck", function()
    local api, host = start({ FLYTE_WORKERS = 1 })
    assert.equal(200, (get(host, "/live")))
    -- an action waiting on the same worker, then the one that gets stuck
    local napping = api:enqueue("nap", { seconds = 60 })
    testing.wait(function()
      local s = host.health_url and select(2, get(host, "/metrics"))
      return s and s:match("\nflyte_actions_held 1")
    end, 10, "the nap to be held")
    local started = core.monotime()
    local result = api:wait_result(api:enqueue("pattern"), 10)
    assert.equal("FATAL", result.event)
    assert.matches("command 'pattern' ran past its 0.5 s timeout in code the "
      .. "host cannot interrupt", result.payload)
    -- from outside, a little after the deadline
    assert.is_true(core.monotime() - started < 5)
    local other = api:wait_result(napping, 10)
    assert.equal("FATAL", other.event)
    assert.matches("command 'nap': its worker got stuck in another "
      .. "action's code and was replaced", other.payload)
    -- capacity came back
    assert.same({ ok = true }, api:wait_result(api:enqueue("ok"), 10).payload)
    assert.equal(1, stuck_gauge(host))
    local status, body = get(host, "/live")
    assert.equal(503, status)
    assert.matches("1 worker thread stuck in pack code", body)
    assert.matches("worker 1 is stuck in pack code past a deadline",
      host:log())
    -- a stop does not wait for the stuck thread
    local t0 = core.monotime()
    assert.equal(0, host:stop())
    assert.is_true(core.monotime() - t0 < 10)
  end)

  it("replaces a worker stuck in a finalizer; /live holds while others "
    .. "serve", function()
    local api, host = start({ FLYTE_WORKERS = 2 })
    local result = api:wait_result(api:enqueue("finalizer"), 10)
    assert.equal("FATAL", result.event)
    assert.matches("command 'finalizer' ran past its 0.5 s timeout",
      result.payload)
    for _ = 1, 4 do
      assert.same({ ok = true },
        api:wait_result(api:enqueue("ok"), 10).payload)
    end
    assert.equal(1, stuck_gauge(host))
    assert.equal(200, (get(host, "/live")))
    -- the host's own collection after a cut runs a finalizer that loops:
    -- guarded the same way, and the action keeps its own FATAL
    result = api:wait_result(api:enqueue("gc_after"), 20)
    assert.same({ "FATAL", "command 'gc_after' timed out after 0.5 s" },
      { result.event, result.payload })
    testing.wait(function() return stuck_gauge(host) == 2 end, 15,
      "the second worker to be replaced")
    assert.same({ ok = true }, api:wait_result(api:enqueue("ok"), 10).payload)
    -- as many stuck threads as workers: only a restart helps now
    local status, body = get(host, "/live")
    assert.equal(503, status)
    assert.matches("2 worker threads stuck in pack code %(FLYTE_WORKERS is 2%)",
      body)
  end)

  it("replaces again after a replaced worker came back and ended", function()
    local api, host = start({ FLYTE_WORKERS = 1 })
    local result = api:wait_result(api:enqueue("blocking"), 10)
    assert.matches("command 'blocking' ran past its 0.5 s timeout in code "
      .. "the host cannot interrupt", result.payload)
    host:wait_log("worker 1 came back from the code it was stuck in; it ends")
    testing.wait(function() return stuck_gauge(host) == 0 end, 5,
      "the stuck count to come down")
    assert.equal(200, (get(host, "/live")))
    -- the worker that took its place gets stuck too: a third takes over
    result = api:wait_result(api:enqueue("pattern"), 10)
    assert.equal("FATAL", result.event)
    assert.same({ ok = true }, api:wait_result(api:enqueue("ok"), 10).payload)
  end)

  it("counts a result handed over from a stuck worker in /metrics",
    function()
      local api, host = start({ FLYTE_WORKERS = 1 })
      -- its result is made; its post waits 4 s in the API
      api:fault { route = "result", delay = 4, count = 1 }
      local ok = api:enqueue("ok")
      testing.wait(function() return api:state().requests.result == 1 end,
        10, "the result post")
      -- the worker gets stuck: the result is handed to its successor
      assert.equal("FATAL", api:wait_result(api:enqueue("pattern"), 10).event)
      assert.same({ ok = true }, api:wait_result(ok, 10).payload)
      -- it went through the hand-over, not its own worker's post
      host:wait_log("result of action " .. ok .. " %(ok%), handed over "
        .. "from worker 1", 10)
      local function completed(command, outcome)
        local _, body = get(host, "/metrics")
        return tonumber(body:match('\nflyte_actions_completed_total{command="'
          .. command .. '",outcome="' .. outcome .. '"} (%d+)'))
      end
      testing.wait(function() return completed("ok", "success") == 1 end, 10,
        "the handed-over result to be counted")
      assert.equal(1, completed("pattern", "timeout"))
    end)

  it("refuses flyte.core.run in a finalizer run between actions", function()
    -- it would run the worker's own event loop from inside whatever code
    -- collected the garbage, and with it the callbacks of other actions
    local api = start({ FLYTE_WORKERS = 1, FLYTE_OUTBOX = "off" })
    api:wait_result(api:enqueue("plant_run"), 10)
    -- a worker idle for a second collects; ask less often than that
    local ran
    for _ = 1, 10 do
      core.sleep(1.3)
      ran = api:wait_result(api:enqueue("ran"), 10).payload.ran
      if ran then break end
    end
    assert.matches("flyte.core.run cannot run here: it was called outside "
      .. "any action", ran)
  end)

  it("stops even when closing its state runs a finalizer that loops",
    function()
      local api = testing.api()
      local host = testing.host(PACK, api, { FLYTE_WORKERS = 1 })
      finally(function()
        if host:exit_status() == nil then host:signal("KILL") end
        api:stop()
      end)
      api:wait_registration()
      assert.same({}, api:wait_result(api:enqueue("plant"), 10).payload)
      host:signal("TERM")
      -- the state closes at the end of the run; its finalizer never
      -- returns: the host gives it 5 s, then ends
      testing.wait(function() return host:exit_status() ~= nil end, 20,
        "the host to exit")
      assert.equal(0, host:exit_status())
      assert.matches("closing the pack's Lua states did not end within 5 s",
        host:log())
    end)
end)

