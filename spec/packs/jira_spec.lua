-- The Jira example pack, in-process with flyte.testing.
local testing = require "flyte.testing"

describe("packs/jira.lua", function()
  local pack = testing.load("packs/jira.lua")

  it("creates an issue for a project", function()
    local event = pack:invoke("createIssue", { project = "FOO", ticketText = "Printer on fire" })
    assert.equal("IssueCreated", event.event)
    assert.equal("FOO", event.payload.project)
    assert.matches("^%d+$", event.payload.issueId)
    assert.equal("http://jira/FOO/" .. event.payload.issueId, event.payload.location)
  end)

  it("answers IssueCreationError when the project is missing", function()
    assert.same({ event = "IssueCreationError",
      payload = { project = require("flyte").null, error = "project is required" } },
      pack:invoke("createIssue", { ticketText = "no project" }))
  end)

  it("answers IssueCreationError when there is no input at all", function()
    assert.equal("IssueCreationError", pack:invoke("createIssue").event)
  end)

  it("registers one command with both events and help links", function()
    local reg = pack:registration()
    assert.equal("JiraPack", reg.name)
    assert.same({ { name = "createIssue", events = { "IssueCreated", "IssueCreationError" },
      links = { { href = "http://jirapack/help#create-issue-command", rel = "help" } } } },
      reg.commands)
  end)

  it("reports the flyte-api check as healthy outside a host", function()
    local health, healthy = pack:health()
    assert.is_true(healthy)
    assert.is_true(health.FlyteApiCheck.healthy)
  end)
end)
