-- Limits on pack code: timeouts, memory, and what stopping does to running
-- handlers.
local testing = require "flyte.testing"

describe("limits on pack code", function()
  local api, host

  lazy_setup(function()
    api = testing.api()
    host = testing.host("spec/fixtures/host/limits.lua", api, {
      FLYTE_WORKERS = 2, FLYTE_HANDLER_TIMEOUT = "0.5", FLYTE_MEMORY_LIMIT = "32MB" })
    api:wait_registration()
  end)

  lazy_teardown(function()
    host:stop()
    api:stop()
  end)

  local function run(command, input)
    local result = api:wait_result(api:enqueue(command, input))
    return { result.event, result.payload }
  end

  it("stops a handler that runs past its timeout with a FATAL", function()
    assert.same({ "FATAL", "command 'spin' timed out after 0.3 s" }, run("spin"))
  end)

  it("stops it even when the handler wraps its loop in pcall", function()
    assert.same({ "FATAL", "command 'stubborn' timed out after 0.3 s" }, run("stubborn"))
  end)

  it("cuts a flyte.sleep that would outlast the timeout", function()
    assert.same({ "FATAL", "command 'sleepy' timed out after 0.3 s" }, run("sleepy"))
  end)

  it("applies FLYTE_HANDLER_TIMEOUT to commands without a timeout", function()
    assert.same({ "FATAL", "command 'forever' timed out after 0.5 s" }, run("forever"))
  end)

  it("turns a runaway allocation into a FATAL, not a crash", function()
    assert.same({ "FATAL", "command 'hog' ran out of memory" }, run("hog"))
  end)

  it("keeps serving after each of these", function()
    assert.same({ "Done", "ok" }, run("ok"))
    assert.same({ "Done", "ok" }, run("ok"))
    assert.is_nil(host:exit_status())
  end)
end)

describe("stopping", function()
  it("lets a running handler finish and delivers its result", function()
    local api = testing.api()
    local host = testing.host("spec/fixtures/host/limits.lua", api, { FLYTE_WORKERS = 1 })
    api:wait_registration()
    local id = api:enqueue("busy", 1)
    testing.wait(function() return api:action(id).state == "PENDING" end, 5, "the action")
    assert.equal(0, host:stop())
    assert.same({ "Done", 1 }, { api:action(id).result.event, api:action(id).result.payload })
    api:stop()
  end)

  it("posts a FATAL for a handler still running at the end of the grace period", function()
    local api = testing.api()
    local host = testing.host("spec/fixtures/host/limits.lua", api,
      { FLYTE_WORKERS = 1, FLYTE_SHUTDOWN_GRACE = "0.5" })
    api:wait_registration()
    local id = api:enqueue("forever")
    testing.wait(function() return api:action(id).state == "PENDING" end, 5, "the action")
    assert.equal(0, host:stop())
    local result = api:action(id).result
    assert.same({ "FATAL", "command 'forever': the host stopped before the handler "
      .. "finished (it ran past the 0.5 s shutdown grace period)" },
      { result.event, result.payload })
    api:stop()
  end)

  it("stops at once on a second signal", function()
    local api = testing.api()
    local host = testing.host("spec/fixtures/host/limits.lua", api,
      { FLYTE_WORKERS = 1, FLYTE_SHUTDOWN_GRACE = "30" })
    api:wait_registration()
    local id = api:enqueue("forever")
    testing.wait(function() return api:action(id).state == "PENDING" end, 5, "the action")
    local core = require "flyte.core"
    local t0 = core.monotime()
    host:signal("TERM")
    host:wait_log("stopping; running handlers may finish")
    host:signal("TERM")
    assert.equal(0, host:wait_exit(10))
    assert.is_true(core.monotime() - t0 < 10)
    api:stop()
  end)

  it("does not take new actions once stopping", function()
    local api = testing.api()
    local host = testing.host("spec/fixtures/host/limits.lua", api, { FLYTE_WORKERS = 1 })
    api:wait_registration()
    local first = api:enqueue("busy", 1)
    testing.wait(function() return api:action(first).state == "PENDING" end, 5, "the action")
    local second = api:enqueue("ok")
    assert.equal(0, host:stop())
    assert.equal("DONE", api:action(first).state)
    assert.equal("NEW", api:action(second).state)
    api:stop()
  end)
end)

describe("an input larger than the memory limit", function()
  it("gets a FATAL saying the command ran out of memory, and the host goes on", function()
    local api = testing.api()
    local host = testing.host("spec/fixtures/host/limits.lua", api,
      { FLYTE_WORKERS = 1, FLYTE_MEMORY_LIMIT = "2MB" })
    api:wait_registration()
    local result = api:wait_result(api:enqueue("ok", string.rep("x", 3000000)))
    assert.same({ "FATAL", "command 'ok' ran out of memory" }, { result.event, result.payload })
    assert.equal("ok", api:wait_result(api:enqueue("ok")).payload)
    assert.equal(0, host:stop())
    api:stop()
  end)
end)
