-- The host's rules for an action and for health (pack-api.md, "What happens
-- to an action" and "Health"), seen through flyte.testing, which runs the
-- same flyte.runner code the host does. Packs are in spec/fixtures/packs/.

local flyte = require "flyte"
local runner = require "flyte.runner"
local testing = require "flyte.testing"

local PACKS = "spec/fixtures/packs/"

local function load(name)
  return testing.load(PACKS .. name .. ".lua")
end

describe("flyte.runner", function()
  describe("a command that behaves", function()
    local pack = load("issues")

    it("returns the handler's event", function()
      assert.same({ event = "IssueCreated", payload = { project = "FOO", issueId = "123" } },
        pack:invoke("createIssue", { project = "FOO" }))
    end)

    it("returns the handler's error event like any other", function()
      assert.same({ event = "IssueCreationError", payload = { error = "project is required" } },
        pack:invoke("createIssue", {}))
    end)

    it("sends an event that is not among output_events as it is", function()
      assert.same({ event = "Surprise", payload = { note = "not declared" } },
        pack:invoke("offList"))
    end)

    it("hands events sent with flyte.send_event to Pack:sent_events", function()
      local announcer = load("issues")
      announcer:invoke("announce", { key = "K-1" })
      assert.same({
        { event = "IssueSeen", payload = { key = "K-1" } },
        { event = "IssueSeen", payload = { key = "K-1-again" } },
      }, announcer:sent_events())
    end)
  end)

  describe("the input", function()
    local pack = load("issues")

    it("arrives as nil when there is none", function()
      assert.same({ input = "nil" }, pack:invoke("inspect").payload)
    end)

    it("keeps an integer an integer", function()
      assert.equal("integer", pack:invoke("inspect", { count = 5 }).payload.count_type)
    end)

    it("keeps a float a float", function()
      assert.equal("float", pack:invoke("inspect", { count = 5.0 }).payload.count_type)
    end)

    it("marks an empty array as an array", function()
      local seen = pack:invoke("inspect", { items = flyte.array {} }).payload
      assert.is_true(seen.items_is_array)
    end)

    it("keeps an empty object an object", function()
      local seen = pack:invoke("inspect", { options = {} }).payload
      assert.is_false(seen.options_is_array)
    end)

    it("arrives with flyte.null where the JSON had null", function()
      local seen = pack:invoke("inspect", { nothing = flyte.null }).payload
      assert.is_true(seen.nothing_is_null)
    end)

    it("is refused by invoke when it cannot be encoded as JSON", function()
      assert.has_error(function() pack:invoke("inspect", { f = print }) end,
        "invoke: the input cannot be encoded as JSON: f: cannot encode a function")
    end)
  end)

  describe("a FATAL event", function()
    local pack = load("faulty")

    it("carries a handler's error message with its position, naming the command",
      function()
        assert.same({ event = "FATAL", payload = "command 'boom' raised an error: "
          .. "spec/fixtures/packs/faulty.lua:15: the tracker is down" },
          pack:invoke("boom"))
      end)

    it("carries a table the handler raised as the payload itself", function()
      assert.same({ event = "FATAL", payload = { code = 503, reason = "maintenance" } },
        pack:invoke("refuse"))
    end)

    it("says so when the handler returns no event", function()
      assert.same({ event = "FATAL", payload = "command 'silent' returned no event" },
        pack:invoke("silent"))
    end)

    it("says so when the handler returns a number", function()
      assert.same({ event = "FATAL",
        payload = "command 'number' returned a number (42), not an event" },
        pack:invoke("number"))
    end)

    it("says so when the handler returns a string", function()
      assert.same({ event = "FATAL",
        payload = "command 'word' returned a string (Done), not an event" },
        pack:invoke("word"))
    end)

    it("says so when the handler returns a table with no event name", function()
      assert.same({ event = "FATAL", payload = "command 'shapeless' returned a table "
        .. "with no event name (build events with an event definition, flyte.event or "
        .. "flyte.fatal), not an event" }, pack:invoke("shapeless"))
    end)

    it("names the command and the path when the payload cannot be encoded", function()
      assert.same({ event = "FATAL", payload = "command 'leaky' returned event 'Done' "
        .. "whose payload cannot be encoded as JSON: payload.items[2]: "
        .. "cannot encode a function" }, pack:invoke("leaky"))
    end)

    it("lists the pack's commands when the command is unknown", function()
      assert.same({ event = "FATAL", payload = "command 'nope' is unknown to pack "
        .. "FaultyPack (its commands: boom, leaky, number, refuse, shapeless, silent, "
        .. "word)" }, pack:invoke("nope"))
    end)

    it("says a pack without commands has none", function()
      assert.same({ event = "FATAL",
        payload = "command 'go' is unknown to pack MinimalPack (its commands: none)" },
        load("minimal"):invoke("go"))
    end)

    it("names the command when the action's input cannot be decoded", function()
      local body, name, fatal = runner.run(load("issues").pack, "inspect", nil,
        "invalid JSON at line 1, column 2: unexpected token near ']'")
      local event = assert(flyte.json.decode(body))
      assert.same({ "FATAL", true }, { name, fatal })
      assert.equal("command 'inspect': the action's input cannot be decoded: "
        .. "invalid JSON at line 1, column 2: unexpected token near ']'", event.payload)
    end)
  end)

  describe("the result body", function()
    it("carries a createdAt time in RFC 3339 UTC", function()
      local body = runner.run(load("issues").pack, "createIssue", { project = "X" })
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$",
        flyte.json.decode(body).createdAt)
    end)
  end)

  describe("loading", function()
    it("refuses a plain pack table that fails the checks, naming file and field",
      function()
        assert.has_error(function() load("invalid") end, PACKS .. "invalid.lua: "
          .. "pack.commands.go.handler must be a function, got nil")
      end)
  end)

  describe("health", function()
    it("reports DefaultCheck healthy when the pack has no checks", function()
      local result, healthy = load("minimal"):health()
      assert.same({ DefaultCheck = { healthy = true, status = "Pack is running." } },
        result)
      assert.is_true(healthy)
    end)

    it("reports a check that returns true with its status", function()
      local result = load("health"):health()
      assert.same({ healthy = true, status = "12 jobs waiting" }, result.Queue)
    end)

    it("reports a failing check as unhealthy with its status", function()
      local result = load("health"):health()
      assert.same({ healthy = false, status = "connection refused" }, result.Database)
    end)

    it("reports a check that raises as unhealthy with the error", function()
      local result = load("health"):health()
      assert.same({ healthy = false, status = "check raised an error: "
        .. "spec/fixtures/packs/health.lua:11: cache host unknown" }, result.Cache)
    end)

    it("is unhealthy overall when one check fails", function()
      local _, healthy = load("health"):health()
      assert.is_false(healthy)
    end)
  end)
end)
