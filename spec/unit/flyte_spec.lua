-- The flyte module as a pack sees it under plain lua5.4 (pack-api.md,
-- "A pack is a Lua file that returns a table" and "The `flyte` module").

local flyte = require "flyte"
local testing = require "flyte.testing"

local RFC3339_MICROS = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$"

local function handler() end

describe("flyte", function()
  describe("event_def", function()
    it("builds { event = name, payload = payload } when called", function()
      local IssueCreated = flyte.event_def { name = "IssueCreated" }
      assert.same({ event = "IssueCreated", payload = { issueId = "123" } },
        IssueCreated { issueId = "123" })
    end)

    it("takes a plain string as the name", function()
      local IssueSeen = flyte.event_def "IssueSeen"
      assert.equal("IssueSeen", IssueSeen.name)
      assert.same({ event = "IssueSeen", payload = 1 }, IssueSeen(1))
    end)

    it("keeps its help_url", function()
      local Failed = flyte.event_def { name = "Failed", help_url = "http://pack/help" }
      assert.equal("http://pack/help", Failed.help_url)
    end)

    it("is recognised by flyte.is_event_def", function()
      assert.is_true(flyte.is_event_def(flyte.event_def "Done"))
      assert.is_false(flyte.is_event_def({ name = "Done" }))
    end)

    it("reads as its name through tostring", function()
      assert.equal("event_def Done", tostring(flyte.event_def "Done"))
    end)

    it("rejects something that is neither a table nor a name", function()
      assert.has_error(function() flyte.event_def(5) end,
        "flyte.event_def: expected a table { name = ..., help_url = ... }, got number")
    end)

    it("rejects a definition without a name", function()
      assert.has_error(function() flyte.event_def {} end,
        "event_def.name must be a non-empty string, got nil")
    end)

    it("rejects a definition with an empty name", function()
      assert.has_error(function() flyte.event_def { name = "" } end,
        'event_def.name must be a non-empty string, got ""')
    end)

    it("rejects an empty string as the name, naming the field", function()
      assert.has_error(function() flyte.event_def "" end,
        'event_def.name must be a non-empty string, got ""')
    end)

    it("rejects a help_url that is not a string", function()
      assert.has_error(function() flyte.event_def { name = "Done", help_url = 5 } end,
        "event_def.help_url must be a string, got number")
    end)

    it("rejects an unknown field, listing the known ones", function()
      assert.has_error(function() flyte.event_def { name = "Done", helpUrl = "x" } end,
        "event_def.helpUrl is not a field of an event definition (name, help_url)")
    end)
  end)

  describe("event", function()
    it("builds an event from an event definition", function()
      local Done = flyte.event_def "Done"
      assert.same({ event = "Done", payload = { n = 1 } }, flyte.event(Done, { n = 1 }))
    end)

    it("builds an event from a name", function()
      assert.same({ event = "Done", payload = "ok" }, flyte.event("Done", "ok"))
    end)

    it("builds an event with no payload", function()
      assert.same({ event = "Done" }, flyte.event("Done"))
    end)

    it("rejects something that names no event", function()
      assert.has_error(function() flyte.event(nil, {}) end,
        "flyte.event: the first argument must be an event definition or a non-empty "
          .. "name, got nil")
    end)
  end)

  describe("fatal", function()
    it("builds a FATAL event with the payload", function()
      assert.same({ event = "FATAL", payload = "it broke" }, flyte.fatal("it broke"))
    end)
  end)

  describe("pack", function()
    it("returns the table it checked", function()
      local pack = { name = "P" }
      assert.equal(pack, flyte.pack(pack))
    end)

    it("raises naming a handler that is not a function", function()
      assert.has_error(function()
        flyte.pack { name = "JiraPack", commands = {
          createIssue = { output_events = { "IssueCreated" } },
        } }
      end, "pack.commands.createIssue.handler must be a function, got nil")
    end)

    it("raises naming a missing pack name", function()
      assert.has_error(function() flyte.pack { commands = {} } end,
        "pack.name must be a non-empty string, got nil")
    end)

    it("raises naming an empty output_events list", function()
      assert.has_error(function()
        flyte.pack { name = "P", commands = {
          go = { output_events = {}, handler = handler },
        } }
      end, "pack.commands.go.output_events must not be empty")
    end)

    it("points its error at the line that called it", function()
      local here = debug.getinfo(1, "S").short_src
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() flyte.pack { name = "" } end)
      assert.is_false(ok)
      assert.equal(here .. ":" .. line .. ': pack.name must be a non-empty string, got ""',
        err)
    end)
  end)

  describe("now", function()
    it("gives the time in RFC 3339 UTC with microseconds", function()
      assert.matches(RFC3339_MICROS, flyte.now())
    end)
  end)

  describe("sleep", function()
    it("returns true under plain Lua", function()
      assert.is_true(flyte.sleep(0))
    end)

    it("rejects a negative number of seconds", function()
      assert.has_error(function() flyte.sleep(-1) end,
        "flyte.sleep: expected a non-negative number of seconds, got -1")
    end)
  end)

  describe("send_event", function()
    it("hands events sent from a handler to Pack:sent_events", function()
      local pack = testing.load("spec/fixtures/packs/issues.lua")
      pack:invoke("announce", { key = "FOO-1" })
      assert.same({
        { event = "IssueSeen", payload = { key = "FOO-1" } },
        { event = "IssueSeen", payload = { key = "FOO-1-again" } },
      }, pack:sent_events())
    end)

    it("returns true outside a host when nothing captures events, and logs it",
      function()
        local core = require "flyte.core"
        local log, lines = core.log, {}
        core.log = function(level, msg) lines[#lines + 1] = level .. " " .. msg end
        finally(function() core.log = log end)
        assert.is_true(flyte.send_event(flyte.event("Seen", { n = 1 })))
        assert.matches('^info event not sent %(no flyte%-host%): {"createdAt":"[^"]+",'
          .. '"event":"Seen","payload":{"n":1}}$', lines[1])
      end)

    it("returns nil and a message naming the path for a payload with no JSON form",
      function()
        local ok, err = flyte.send_event(flyte.event("Seen", { f = print }))
        assert.is_nil(ok)
        assert.equal("flyte.send_event: the event cannot be encoded: "
          .. "payload.f: cannot encode a function", err)
      end)

    it("rejects something that is not an event", function()
      assert.has_error(function() flyte.send_event("Seen") end,
        "flyte.send_event: expected an event (build it with an event definition or "
          .. "flyte.event), got string")
    end)
  end)

  describe("log", function()
    it("has debug, info, warn and error functions", function()
      for _, level in ipairs { "debug", "info", "warn", "error" } do
        assert.is_function(flyte.log[level])
      end
    end)

    it("accepts a message with a table of fields", function()
      assert.has_no.errors(function()
        flyte.log.debug("checked the queue", { jobs = 3, queue = "main" })
      end)
    end)

    it("accepts a message without fields", function()
      assert.has_no.errors(function() flyte.log.debug("checked the queue") end)
    end)

    it("rejects fields that are not a table", function()
      assert.has_error(function() flyte.log.info("hello", "jobs=3") end,
        "flyte.log.info: fields must be a table, got string")
    end)
  end)

  describe("array", function()
    it("marks the table it is given and returns it", function()
      local items = { 1, 2 }
      assert.equal(items, flyte.array(items))
      assert.is_true(flyte.json.is_array(items))
    end)

    it("makes an empty array when given nothing", function()
      local items = flyte.array()
      assert.same({}, items)
      assert.is_true(flyte.json.is_array(items))
    end)

    it("raises for a table that has another metatable", function()
      assert.has_error(function() flyte.array(setmetatable({}, {})) end,
        "flyte.array: the table already has a metatable")
    end)

    it("raises for something that is not a table", function()
      assert.has_error(function() flyte.array("x") end,
        "flyte.array: expected a table, got string")
    end)
  end)

  describe("null", function()
    it("is the same value as flyte.json.null", function()
      assert.equal(flyte.json.null, flyte.null)
    end)
  end)
end)
