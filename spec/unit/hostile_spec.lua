-- Pack code that misuses coroutines, tasks and the standard library, run
-- in-process with the host's rules (the same C code as flyte-host).
local testing = require "flyte.testing"
local flyte = require "flyte"

describe("a hostile pack", function()
  local pack = testing.load("spec/fixtures/host/hostile.lua")

  it("cannot resume an action's waiting coroutine from another task",
    function()
      assert.same({ event = "Done", payload = { slept = true, ok = false,
        error = "cannot resume or close this coroutine: it belongs to the "
          .. "host (an action's or a task's), or waits on it" } },
        pack:invoke("resume_me"))
    end)

  it("cannot resume a generator left waiting by an action that ended",
    function()
      assert.equal("FATAL", pack:invoke("leave_napper").event)
      local event = pack:invoke("call_napper")
      assert.is_false(event.payload.ok)
      assert.matches("cannot resume or close this coroutine: it belongs to "
        .. "the host", event.payload.error, 1, true)
    end)

  it("cannot close a task's coroutine", function()
    local core = require "flyte.core"
    local ok, closed, err = core.run(0, function()
      local kid
      local task = flyte.spawn(function()
        kid = coroutine.running()
        flyte.sleep(0.05)
        return "done"
      end)
      flyte.sleep(0) -- the task starts, and waits
      local closed, err = coroutine.close(kid)
      assert(task:wait())
      return closed, err
    end)
    assert.is_true(ok)
    assert.is_false(closed)
    assert.matches("cannot resume or close this coroutine", err, 1, true)
  end)

  it("ends tasks that wait on each other with their action", function()
    assert.same({ event = "Done", payload = {} }, pack:invoke("wait_chain"))
  end)

  it("cannot spawn while its action is being killed", function()
    assert.same({ event = "FATAL",
      payload = "command 'close_spawn' timed out after 0.3 s" },
      pack:invoke("close_spawn"))
  end)

  it("cannot remove the host's hook", function()
    assert.same({ event = "FATAL",
      payload = "command 'unhook' timed out after 0.5 s" },
      pack:invoke("unhook"))
  end)

  it("cannot escape its deadline in a coroutine made at load time", function()
    assert.same({ event = "FATAL",
      payload = "command 'spin' timed out after 0.5 s" }, pack:invoke("spin"))
  end)

  it("cannot end the process with os.exit", function()
    local event = pack:invoke("exit")
    assert.equal("FATAL", event.event)
    assert.matches("os.exit is not allowed in pack code", event.payload)
  end)
end)
