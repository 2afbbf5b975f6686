-- End to end: a pack that misbehaves on purpose cannot end the host,
-- escape a deadline, or leave programs running.
local testing = require "flyte.testing"

local PACK = "spec/fixtures/host/hostile.lua"

local function running(mark)
  local p = io.popen("pgrep -f 'slee[p] " .. mark .. "'")
  local out = p:read("a")
  p:close()
  return out ~= ""
end

describe("a hostile pack in flyte-host", function()
  local api, host

  lazy_setup(function()
    api = testing.api()
    host = testing.host(PACK, api, { FLYTE_WORKERS = 1 })
    api:wait_registration()
  end)

  lazy_teardown(function()
    if host then host:stop() end
    if api then api:stop() end
  end)

  local function run(command, input)
    return api:wait_result(api:enqueue(command, input))
  end

  it("cannot end the host with os.exit", function()
    local result = run("exit")
    assert.equal("FATAL", result.event)
    assert.matches("os.exit is not allowed in pack code", result.payload)
    assert.same({ ok = true }, run("ok").payload)
    assert.is_nil(host:exit_status())
  end)

  it("cannot remove the host's hook with debug.sethook", function()
    assert.same({ "FATAL", "command 'unhook' timed out after 0.5 s" },
      { run("unhook").event, run("unhook").payload })
    assert.same({ ok = true }, run("ok").payload)
  end)

  it("leaves no program running after flyte.exec", function()
    local mark = "37." .. math.random(100000, 999999)
    assert.same({ stdout = "started\n" }, run("orphan", { mark = mark }).payload)
    testing.wait(function() return not running(mark) end, 5,
      "sleep " .. mark .. " to be gone")
  end)

  it("survives coroutines resumed behind the host's back", function()
    assert.equal("Done", run("resume_me").event)
    assert.equal("FATAL", run("leave_napper").event)
    assert.equal("Done", run("call_napper").event)
    assert.equal("Done", run("wait_chain").event)
    assert.equal("FATAL", run("close_spawn").event)
    assert.same({ ok = true }, run("ok").payload)
  end)
end)

describe("flyte-host", function()
  it("ignores SIGUSR1 and SIGUSR2", function()
    local api = testing.api()
    local host = testing.host(PACK, api, { FLYTE_WORKERS = 1 })
    finally(function() host:stop(); api:stop() end)
    api:wait_registration()
    host:signal("USR1")
    host:signal("USR2")
    local result = api:wait_result(api:enqueue("ok"))
    assert.same({ ok = true }, result.payload)
    assert.is_nil(host:exit_status())
  end)
end)
