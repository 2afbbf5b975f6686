-- End to end: the real flyte-host binary against the stand-in flyte-api
-- (its own process) over 127.0.0.1.
local testing = require "flyte.testing"
local flyte = require "flyte"

local PACK = "spec/fixtures/host/cases.lua"

local tmpname = testing.tmpname

describe("flyte-host run", function()
  local api, host, unhealthy

  lazy_setup(function()
    unhealthy = tmpname()
    api = testing.api { jwt = "s3cret.jwt" }
    host = testing.host(PACK, api, {
      FLYTE_LABELS = "env=test, team=qa",
      FLYTE_JWT = "s3cret.jwt",
      FLYTE_WORKERS = 2,
      CASES_UNHEALTHY_FILE = unhealthy,
    })
    api:wait_registration()
  end)

  lazy_teardown(function()
    if host then host:stop() end
    if api then api:stop() end
    os.remove(unhealthy)
  end)

  local function run(command, input)
    local id = api:enqueue(command, input, "Cases.env.test.team.qa")
    return api:wait_result(id)
  end

  describe("registration", function()
    it("sends the pack's commands, events, labels and help links", function()
      assert.same({
        name = "Cases",
        labels = { env = "test", team = "qa" },
        links = { { href = "http://cases/help", rel = "help" } },
        commands = {
          { name = "boom", events = { "Echoed", "Stopped" } },
          { name = "boom_table", events = { "Echoed", "Stopped" } },
          { name = "echo", events = { "Echoed", "Stopped" } },
          { name = "latin1", events = { "Echoed", "Stopped" } },
          { name = "nothing", events = { "Echoed", "Stopped" } },
          { name = "number", events = { "Echoed", "Stopped" } },
          { name = "send", events = { "Echoed", "Stopped" } },
          { name = "surprise", events = { "Echoed", "Stopped" } },
          { name = "unencodable", events = { "Echoed", "Stopped" } },
          { name = "wait", events = { "Echoed", "Stopped" } },
        },
        events = {
          { name = "Echoed" },
          { name = "Stopped" },
          { name = "Sent", links = { { href = "http://cases/help#sent", rel = "help" } } },
        },
      }, api:wait_registration())
    end)

    it("sends FLYTE_JWT as a bearer token", function()
      assert.equal("Bearer s3cret.jwt", api:state().authorization)
    end)

    it("never prints the token", function()
      assert.is_nil(host:log():find("s3cret", 1, true))
    end)
  end)

  describe("an action", function()
    it("gets the handler's event as its result", function()
      local result = run("echo", { project = "FOO", n = 5, x = 0.1, list = flyte.array {} })
      assert.equal("Echoed", result.event)
      assert.same({ project = "FOO", n = 5, x = 0.1, list = {} }, result.payload)
      assert.equal("integer", math.type(result.payload.n))
      assert.truthy(flyte.json.is_array(result.payload.list))
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$", result.createdAt)
    end)

    it("without input calls the handler with nil", function()
      local result = run("echo")
      assert.same({ event = "Echoed" }, { event = result.event, payload = result.payload })
    end)

    it("that raises an error gets a FATAL naming the command and the place", function()
      local result = run("boom")
      assert.equal("FATAL", result.event)
      assert.equal("command 'boom' raised an error: "
        .. PACK .. ":26: kaboom", result.payload)
    end)

    it("that raises an error quoting bytes that are not UTF-8 keeps the message", function()
      local result = run("latin1")
      assert.same({ "FATAL", "command 'latin1' raised an error: " .. PACK
        .. ":29: upstream said: caf\u{FFFD}" }, { result.event, result.payload })
    end)

    it("that raises a table gets a FATAL whose payload is the table", function()
      assert.same({ event = "FATAL", payload = { code = 42 } },
        { event = run("boom_table").event, payload = run("boom_table").payload })
    end)

    it("whose handler returns nothing gets a FATAL", function()
      local result = run("nothing")
      assert.same({ "FATAL", "command 'nothing' returned no event" },
        { result.event, result.payload })
    end)

    it("whose handler returns a non-event gets a FATAL", function()
      local result = run("number")
      assert.same({ "FATAL", "command 'number' returned a number (42), not an event" },
        { result.event, result.payload })
    end)

    it("whose payload cannot be encoded gets a FATAL naming the field", function()
      local result = run("unencodable")
      assert.same({ "FATAL", "command 'unencodable' returned event 'Echoed' whose "
        .. "payload cannot be encoded as JSON: payload.f: cannot encode a function" },
        { result.event, result.payload })
    end)

    it("for an unknown command gets a FATAL listing the pack's commands", function()
      -- the stand-in, as a flow would, asks only for the pack's commands
      local res = flyte.http.request { method = "POST",
        url = api.url .. "/dev/actions", body = { command = "nope" } }
      assert.same({ 400, "command 'nope' is unknown to pack Cases.env.test."
        .. "team.qa (its commands: boom, boom_table, echo, latin1, nothing, "
        .. "number, send, surprise, unencodable, wait)" },
        { res.status, flyte.json.decode(res.body).error })
      local result = api:wait_result(api:enqueue("nope", nil, nil,
        { any_command = true }))
      assert.same({ "FATAL", "command 'nope' is unknown to pack Cases (its commands: "
        .. "boom, boom_table, echo, latin1, nothing, number, send, surprise, unencodable, "
        .. "wait)" },
        { result.event, result.payload })
    end)

    it("whose input cannot be decoded gets a FATAL", function()
      local deep = string.rep("[", 1001) .. string.rep("]", 1001)
      local id = api:enqueue_raw("echo", deep)
      local result = api:wait_result(id)
      assert.same({ "FATAL", "command 'echo': the action's input cannot be decoded: "
        .. "nested deeper than 1000 levels" }, { result.event, result.payload })
    end)

    it("returning an event outside output_events sends it with a warning", function()
      local result = run("surprise")
      assert.same({ "Surprise", 1 }, { result.event, result.payload })
      host:wait_log("returned event 'Surprise', which is not among its output_events")
    end)

    it("keeps the host running after every failure", function()
      assert.is_nil(host:exit_status())
      assert.equal("Echoed", run("echo", 1).event)
    end)
  end)

  describe("events", function()
    it("sent from a handler arrive at the pack's event link", function()
      run("send", 7)
      local events = api:wait_events(1)
      assert.same({ event = "Sent", payload = { n = 7 } },
        { event = events[1].body.event, payload = events[1].body.payload })
      assert.equal("Cases.env.test.team.qa", events[1].pack)
    end)
  end)

  describe("health", function()
    it("answers 200 with each check's JSON", function()
      local status, body = testing.get(host.health_url)
      assert.equal(200, status)
      assert.same({ Ready = { healthy = true, status = { ok = 1 } } },
        flyte.json.decode(body))
    end)

    it("answers 500 when a check fails", function()
      local f = assert(io.open(unhealthy, "w"))
      f:close()
      local status, body = testing.get(host.health_url .. "any/path")
      os.remove(unhealthy)
      assert.equal(500, status)
      assert.same({ Ready = { healthy = false, status = "not ready: " .. unhealthy } },
        flyte.json.decode(body))
    end)

    it("answers while every worker is busy", function()
      local release = tmpname()
      local ids = {
        api:enqueue("wait", { file = release }, "Cases.env.test.team.qa"),
        api:enqueue("wait", { file = release }, "Cases.env.test.team.qa"),
      }
      testing.wait(function()
        return api:action(ids[1]).state == "PENDING" and api:action(ids[2]).state == "PENDING"
      end, 5, "both workers to be busy")
      local status = testing.get(host.health_url)
      assert.equal(200, status)
      local f = assert(io.open(release, "w"))
      f:close()
      assert.equal("Echoed", api:wait_result(ids[1]).event)
      assert.equal("Echoed", api:wait_result(ids[2]).event)
      os.remove(release)
    end)
  end)

  it("stops on SIGTERM with exit status 0", function()
    assert.equal(0, host:stop())
    host:wait_log("stopped")
  end)
end)

describe("an event the pack does not declare", function()
  it("is sent, with a warning, from a handler and from observe", function()
    local api = testing.api()
    local host = testing.host("spec/fixtures/host/undeclared.lua", api)
    finally(function()
      host:stop()
      api:stop()
    end)
    api:wait_registration()
    assert.equal("Done", api:wait_result(api:enqueue("send")).event)
    local names = {}
    for _, e in ipairs(api:wait_events(2)) do names[e.body.event] = true end
    assert.same({ Unheard = true, Unseen = true }, names)
    for _, name in ipairs { "Unheard", "Unseen" } do
      host:wait_log("flyte.send_event: event '" .. name .. "' is not among "
        .. "the pack's events %(declare it in the pack's events%); sending "
        .. "it anyway")
    end
  end)
end)
