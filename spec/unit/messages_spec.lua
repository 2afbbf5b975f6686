-- The messages an author reads for the usual mistakes: each names the
-- cause, says what to do, and has the file and line.
local testing = require "flyte.testing"

local DIR = "spec/fixtures/packs/mistakes"

describe("a message for a mistake", function()
  local pack = testing.load(DIR .. "/events.lua")

  it("says to call an event definition that was returned uncalled", function()
    assert.same({ event = "FATAL", payload = "command 'uncalled' returned the "
      .. "event definition 'Counted' itself (call it to build an event: "
      .. "Counted { ... }), not an event" }, pack:invoke("uncalled"))
  end)

  it("says flyte.event's arguments are swapped, and where", function()
    assert.same({ event = "FATAL", payload = "command 'swapped' raised an "
      .. "error: flyte.event: the first argument must be an event definition "
      .. "or a non-empty name, got table (the arguments are swapped: "
      .. "flyte.event(definition, payload)) (in the handler at " .. DIR
      .. "/events.lua:14)" }, pack:invoke("swapped"))
  end)

  it("goes to pack:logs(), not to the spec's output", function()
    local n = #pack:logs()
    pack:invoke("swapped")
    local line = pack:logs()[n + 1]
    assert.same({ "error", "command 'swapped' raised an error" },
      { line.level, line.message })
    assert.matches("stack traceback:", line.fields.traceback)
  end)

  it("keeps a module not found to one short line", function()
    local payload = pack:invoke("missing").payload
    assert.matches("^command 'missing' raised an error: " .. DIR:gsub("%p", "%%%0")
      .. "/events%.lua:%d+: module 'mistakes_helper%.nowhere' not found %(looked "
      .. "for " .. DIR:gsub("%p", "%%%0") .. "/mistakes_helper/nowhere%.lua and ",
      payload)
    assert.is_nil(payload:find("\n", 1, true))
    assert.is_true(#payload < 400, #payload .. " characters")
  end)

  it("names the file and line of an unknown field in flyte.pack", function()
    local ok, err = pcall(testing.load, DIR .. "/typo.lua")
    assert.is_false(ok)
    assert.matches(DIR:gsub("%p", "%%%0") .. "/typo%.lua:7: "
      .. "pack%.commands%.go%.handlr is not a known field %(handler, ", err)
  end)

  it("keeps a module not found at load to one line", function()
    local ok, err = pcall(testing.load, DIR .. "/missing_module.lua")
    assert.is_false(ok)
    assert.matches("missing_module%.lua:3: module 'webhook%.missing' not "
      .. "found %(looked for ", err)
    assert.is_nil(err:find("\n", 1, true))
  end)
end)
