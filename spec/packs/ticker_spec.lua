-- The ticker example pack (flyte-ticker in Lua): observe only. In-process
-- on a fake clock (pack:observe), and once end to end on a real host.
local core = require "flyte.core"
local testing = require "flyte.testing"
local env = require "support.env"

local RFC3339 = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$"

-- The ticker with TICKER_INTERVAL as given (unset by default): it reads it
-- when it is loaded.
local function ticker(interval)
  local restore = env.set { TICKER_INTERVAL = interval or false }
  local ok, pack = pcall(testing.load, "packs/ticker.lua")
  restore()
  if not ok then error(pack, 2) end
  return pack
end

describe("packs/ticker.lua", function()
  it("registers the Tick event and no commands", function()
    local reg = ticker():registration()
    assert.same({ name = "Ticker", commands = {}, events = { { name = "Tick" } } }, reg)
  end)

  describe("on a fake clock", function()
    it("sends a Tick at each minute", function()
      local events, clock = ticker():observe { until_events = 3 }
      assert.equal(3, #events)
      for i, e in ipairs(events) do
        assert.equal("Tick", e.event)
        assert.equal(60 * i, testing.parse_time(e.payload.time) - clock.start)
      end
    end)

    it("sends Ticks 60 s apart", function()
      local events = ticker():observe { until_events = 3 }
      local t1, t2, t3 = testing.parse_time(events[1].payload.time),
        testing.parse_time(events[2].payload.time), testing.parse_time(events[3].payload.time)
      assert.equal(60, t2 - t1)
      assert.equal(60, t3 - t2)
    end)

    it("tells the time of each Tick in RFC 3339 UTC", function()
      local events = ticker():observe { until_events = 1,
        clock = testing.clock("2026-11-28T20:00:00Z") }
      assert.equal("2026-11-28T20:01:00.000000Z", events[1].payload.time)
      assert.matches(RFC3339, events[1].payload.time)
    end)

    it("runs three minutes of Ticks in well under a second", function()
      local started = core.monotime()
      ticker():observe { until_events = 3 }
      assert.is_true(core.monotime() - started < 0.5)
    end)

    it("ends its loop when flyte.sleep returns false", function()
      local _, clock = ticker():observe { until_events = 3 }
      assert.same({ 60, 60, 60, 60 }, clock.sleeps)
      assert.equal(180, clock:elapsed())
    end)

    it("ticks every TICKER_INTERVAL seconds", function()
      local events, clock = ticker("5"):observe { until_events = 2 }
      assert.equal(10, testing.parse_time(events[2].payload.time) - clock.start)
    end)
  end)

  it("refuses a TICKER_INTERVAL that is not a positive number", function()
    local ok, err = pcall(ticker, "soon")
    assert.is_false(ok)
    assert.matches("^packs/ticker%.lua: error while loading the pack: packs/ticker%.lua:%d+: "
      .. "TICKER_INTERVAL must be a positive number of seconds, got soon$", err)
  end)

  it("sends a Tick with the time in RFC 3339 at each interval from a real host", function()
    local api = testing.api()
    local host = testing.host("packs/ticker.lua", api, { TICKER_INTERVAL = "0.2" })
    local events = api:wait_events(2)
    for i = 1, 2 do
      assert.equal("Tick", events[i].body.event)
      assert.matches(RFC3339, events[i].body.payload.time)
    end
    assert.equal(0, host:stop())
    api:stop()
  end)
end)
