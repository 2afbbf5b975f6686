-- flyte.schema: checking pack tables (every message names the field) and the
-- registration body the host sends to the flyte-api.

local flyte = require "flyte"
local schema = require "flyte.schema"
local testing = require "flyte.testing"

local json = flyte.json

local function handler() end

-- The message check_pack gives for a pack it refuses.
local function problem(pack)
  local ok, err = schema.check_pack(pack)
  assert.is_nil(ok)
  return err
end

-- A pack whose only command, `go`, is `command`.
local function with_command(command)
  return { name = "P", commands = { go = command } }
end

-- A valid command with one field replaced.
local function command_with(field, value)
  local command = { output_events = { "Done" }, handler = handler }
  command[field] = value
  return command
end

describe("flyte.schema", function()
  describe("check_pack", function()
    it("accepts a pack with every field set", function()
      assert.is_true(schema.check_pack {
        name = "P",
        help_url = "http://p/help",
        labels = { team = "ops" },
        events = { "Seen", flyte.event_def "Other", { name = "Plain" } },
        commands = {
          go = { output_events = { "Done" }, handler = handler,
            help_url = "http://p/help#go", timeout = 0.5 },
        },
        health_checks = { Check = handler },
        observe = handler,
      })
    end)

    it("accepts a pack with only a name", function()
      assert.is_true(schema.check_pack { name = "P" })
    end)

    it("refuses a pack that is not a table", function()
      assert.equal("a pack must be a table (return flyte.pack { ... }), got nil",
        problem(nil))
    end)

    describe("at the pack level", function()
      it("refuses a missing name", function()
        assert.equal("pack.name must be a non-empty string, got nil", problem {})
      end)

      it("refuses an empty name", function()
        assert.equal('pack.name must be a non-empty string, got ""', problem { name = "" })
      end)

      it("refuses an unknown field, listing the known ones", function()
        assert.equal("pack.command is not a known field (commands, events, "
          .. "health_checks, help_url, labels, name, observe)",
          problem { name = "P", command = {} })
      end)

      it("refuses a help_url that is not a string", function()
        assert.equal("pack.help_url must be a string, got number",
          problem { name = "P", help_url = 1 })
      end)

      it("refuses labels that are not a table", function()
        assert.equal('pack.labels must be a table of strings, got "team=ops"',
          problem { name = "P", labels = "team=ops" })
      end)

      it("refuses a label whose value is not a string", function()
        assert.equal("pack.labels.team must be a string, got number",
          problem { name = "P", labels = { team = 1 } })
      end)

      it("refuses a label whose key is not a string", function()
        assert.equal("pack.labels keys must be non-empty strings, got number",
          problem { name = "P", labels = { "ops" } })
      end)

      it("refuses events that are not a list", function()
        assert.equal('pack.events must be a list, got "Seen"',
          problem { name = "P", events = "Seen" })
      end)

      it("refuses an events item that is not an event", function()
        assert.equal("pack.events[2] must be an event definition or a non-empty name, "
          .. "got number", problem { name = "P", events = { "Seen", 7 } })
      end)

      it("refuses commands that are not a table", function()
        assert.equal('pack.commands must be a table of commands by name, got "go"',
          problem { name = "P", commands = "go" })
      end)

      it("refuses a command key that is not a name", function()
        assert.equal("pack.commands keys must be non-empty command names, got number",
          problem { name = "P",
            commands = { { output_events = { "Done" }, handler = handler } } })
      end)

      it("refuses health_checks that are not a table", function()
        assert.equal("pack.health_checks must be a table of functions by name, got number",
          problem { name = "P", health_checks = 1 })
      end)

      it("refuses a health check that is not a function", function()
        assert.equal('pack.health_checks.Database must be a function, got "ok"',
          problem { name = "P", health_checks = { Database = "ok" } })
      end)

      it("refuses a health check key that is not a name", function()
        assert.equal("pack.health_checks keys must be non-empty names, got number",
          problem { name = "P", health_checks = { handler } })
      end)

      it("refuses an observe that is not a function", function()
        assert.equal("pack.observe must be a function, got table",
          problem { name = "P", observe = {} })
      end)
    end)

    describe("at the command level", function()
      it("refuses a command that is not a table", function()
        assert.equal("pack.commands.go must be a table, got number", problem(with_command(1)))
      end)

      it("refuses an unknown field, listing the known ones", function()
        assert.equal("pack.commands.go.outputEvents is not a known field "
          .. "(handler, help_url, output_events, timeout)",
          problem(with_command(command_with("outputEvents", { "Done" }))))
      end)

      it("refuses missing output_events", function()
        assert.equal("pack.commands.go.output_events must be a non-empty list of events, "
          .. "got nil", problem(with_command(command_with("output_events", nil))))
      end)

      it("refuses empty output_events", function()
        assert.equal("pack.commands.go.output_events must not be empty",
          problem(with_command(command_with("output_events", {}))))
      end)

      it("refuses output_events that are not a list", function()
        assert.equal('pack.commands.go.output_events must be a list, got "Done"',
          problem(with_command(command_with("output_events", "Done"))))
      end)

      it("refuses output_events with keys other than 1..n", function()
        assert.equal('pack.commands.go.output_events must be a list (keys 1..n), '
          .. 'has key "done"',
          problem(with_command(command_with("output_events", { done = "Done" }))))
      end)

      it("refuses an output_events item that is not an event", function()
        assert.equal("pack.commands.go.output_events[2] must be an event definition "
          .. "or a non-empty name, got number",
          problem(with_command(command_with("output_events", { "Done", 2 }))))
      end)

      it("refuses an output_events item that is an empty name", function()
        assert.equal("pack.commands.go.output_events[1] must be an event definition "
          .. 'or a non-empty name, got ""',
          problem(with_command(command_with("output_events", { "" }))))
      end)

      it("refuses an output_events item whose help_url is not a string", function()
        assert.equal("pack.commands.go.output_events[1].help_url must be a string, "
          .. "got number", problem(with_command(command_with("output_events",
            { { name = "Done", help_url = 1 } }))))
      end)

      it("refuses a missing handler", function()
        assert.equal("pack.commands.go.handler must be a function, got nil",
          problem(with_command(command_with("handler", nil))))
      end)

      it("refuses a handler that is not a function", function()
        assert.equal('pack.commands.go.handler must be a function, got "handler"',
          problem(with_command(command_with("handler", "handler"))))
      end)

      it("refuses a help_url that is not a string", function()
        assert.equal("pack.commands.go.help_url must be a string, got boolean",
          problem(with_command(command_with("help_url", true))))
      end)

      it("refuses a zero timeout", function()
        assert.equal("pack.commands.go.timeout must be a positive number of seconds, "
          .. "got 0", problem(with_command(command_with("timeout", 0))))
      end)

      it("refuses a negative timeout", function()
        assert.equal("pack.commands.go.timeout must be a positive number of seconds, "
          .. "got -1", problem(with_command(command_with("timeout", -1))))
      end)

      it("refuses a timeout given as a string, quoting it", function()
        assert.equal("pack.commands.go.timeout must be a positive number of seconds, "
          .. 'got "30"', problem(with_command(command_with("timeout", "30"))))
      end)
    end)
  end)

  describe("registration", function()
    local Created = flyte.event_def "Created"
    local Failed = flyte.event_def { name = "Failed", help_url = "http://p/help#failed" }

    it("lists commands in name order", function()
      local body = schema.registration {
        name = "P",
        commands = {
          zap = { output_events = { "Done" }, handler = handler },
          add = { output_events = { "Done" }, handler = handler },
          move = { output_events = { "Done" }, handler = handler },
        },
      }
      assert.same({ "add", "move", "zap" },
        { body.commands[1].name, body.commands[2].name, body.commands[3].name })
    end)

    it("lists each command's output event names in order", function()
      local body = schema.registration(with_command {
        output_events = { Created, Failed, "Plain" }, handler = handler })
      assert.same({ "Created", "Failed", "Plain" }, body.commands[1].events)
    end)

    it("gathers events from commands and pack.events without duplicates", function()
      local body = schema.registration {
        name = "P",
        events = { "Seen", Created },
        commands = {
          b = { output_events = { Created, Failed }, handler = handler },
          a = { output_events = { "Created" }, handler = handler },
        },
      }
      assert.equal('[{"name":"Created"},{"links":[{"href":"http://p/help#failed",'
        .. '"rel":"help"}],"name":"Failed"},{"name":"Seen"}]', json.encode(body.events))
    end)

    it("keeps a help link given to any mention of an event", function()
      local body = schema.registration {
        name = "P",
        events = { Failed },
        commands = { go = { output_events = { "Failed" }, handler = handler } },
      }
      assert.same({ { name = "Failed",
        links = { { href = "http://p/help#failed", rel = "help" } } } }, body.events)
    end)

    it("gives the pack and its commands help links with rel help", function()
      local body = schema.registration {
        name = "P",
        help_url = "http://p/help",
        commands = { go = { output_events = { "Done" }, handler = handler,
          help_url = "http://p/help#go" } },
      }
      assert.same({ { href = "http://p/help", rel = "help" } }, body.links)
      assert.same({ { href = "http://p/help#go", rel = "help" } }, body.commands[1].links)
    end)

    it("merges labels, the overrides winning per key", function()
      local body = schema.registration({ name = "P",
        labels = { team = "ops", env = "dev" } }, { env = "prod", zone = "eu" })
      assert.same({ team = "ops", env = "prod", zone = "eu" }, body.labels)
    end)

    it("takes labels from the overrides alone", function()
      local body = schema.registration({ name = "P" }, { env = "prod" })
      assert.same({ env = "prod" }, body.labels)
    end)

    it("omits labels and links when there are none", function()
      local body = schema.registration({ name = "P", labels = {},
        commands = { go = { output_events = { "Done" }, handler = handler } } }, {})
      assert.equal('{"commands":[{"events":["Done"],"name":"go"}],'
        .. '"events":[{"name":"Done"}],"name":"P"}', json.encode(body))
    end)

    it("encodes no commands and no events as empty arrays", function()
      assert.equal('{"commands":[],"events":[],"name":"P"}',
        json.encode(schema.registration { name = "P" }))
    end)

    it("is what Pack:registration gives for a pack file, labels included", function()
      local pack = testing.load("spec/fixtures/packs/issues.lua")
      assert.same({
        name = "IssuesPack",
        labels = { env = "prod" },
        commands = {
          { name = "announce", events = { "IssueCreated" } },
          { name = "createIssue", events = { "IssueCreated", "IssueCreationError" } },
          { name = "inspect", events = { "Inspected" } },
          { name = "offList", events = { "IssueCreated" } },
        },
        events = {
          { name = "IssueCreated" },
          { name = "IssueCreationError",
            links = { { href = "http://issues/help#errors", rel = "help" } } },
          { name = "Inspected" },
        },
      }, pack:registration { env = "prod" })
    end)
  end)
end)
