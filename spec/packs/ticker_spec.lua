-- The ticker example pack (flyte-ticker in Lua): observe only.
local testing = require "flyte.testing"

describe("packs/ticker.lua", function()
  it("registers the Tick event and no commands", function()
    local reg = testing.load("packs/ticker.lua"):registration()
    assert.same({ name = "Ticker", commands = {}, events = { { name = "Tick" } } }, reg)
  end)

  it("sends a Tick with the time in RFC 3339 at each interval", function()
    local api = testing.api()
    local host = testing.host("packs/ticker.lua", api, { TICKER_INTERVAL = "0.2" })
    local events = api:wait_events(2)
    for i = 1, 2 do
      assert.equal("Tick", events[i].body.event)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$",
        events[i].body.payload.time)
    end
    assert.equal(0, host:stop())
    api:stop()
  end)
end)
