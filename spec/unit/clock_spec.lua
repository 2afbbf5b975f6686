-- flyte.testing's fake clock (testing.clock, testing.parse_time) and
-- pack:observe, which runs an observe loop on it.
local flyte = require "flyte"
local core = require "flyte.core"
local testing = require "flyte.testing"
local env = require "support.env"

local OBSERVER = "spec/fixtures/packs/observer.lua"

-- The observer fixture, whose observe does what `case` says.
local function observer(case)
  finally(env.set { OBSERVE_CASE = case })
  return testing.load(OBSERVER)
end

-- The message of the error fn raises, without its position.
local function raised(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return (tostring(err):gsub("^[^:]+:%d+: ", ""))
end

describe("testing.clock", function()
  it("starts at 2026-01-01T00:00:00Z unless told otherwise", function()
    assert.equal("2026-01-01T00:00:00.000000Z", testing.clock():now())
  end)

  it("starts at the RFC 3339 time given", function()
    assert.equal("2026-11-28T20:02:34.500000Z",
      testing.clock("2026-11-28T20:02:34.5Z"):now())
  end)

  it("starts at the number of seconds since the epoch given", function()
    assert.equal("1970-01-02T00:00:00.000000Z", testing.clock(86400):now())
  end)

  it("refuses a start that is not a time", function()
    assert.equal("testing.clock: start must be an RFC 3339 time or a number of "
      .. "seconds, got tomorrow", raised(function() testing.clock("tomorrow") end))
  end)

  it("moves on by what flyte.sleep is given, at once, once installed", function()
    local clock = testing.clock():install()
    finally(function() clock:remove() end)
    local started = core.monotime()
    assert.is_true(flyte.sleep(3600))
    assert.equal("2026-01-01T01:00:00.000000Z", flyte.now())
    assert.is_true(core.monotime() - started < 0.5)
  end)

  it("makes flyte.sleep return false once stopped", function()
    local clock = testing.clock():install()
    finally(function() clock:remove() end)
    clock:stop()
    assert.is_false(flyte.sleep(10))
    assert.equal(0, clock:elapsed())
  end)

  it("moves on with advance, without a sleep", function()
    local clock = testing.clock()
    clock:advance(1.5)
    assert.equal("2026-01-01T00:00:01.500000Z", clock:now())
  end)

  it("leaves flyte.now to the real clock once removed", function()
    local clock = testing.clock():install()
    clock:remove()
    assert.is_nil(flyte._clock)
    assert.is_true(math.abs(testing.parse_time(flyte.now()) - os.time()) < 5)
  end)
end)

describe("testing.parse_time", function()
  it("reads flyte.now()'s form as seconds since the epoch", function()
    assert.equal(60.5, testing.parse_time("1970-01-01T00:01:00.500000Z"))
  end)

  it("agrees with the calendar for a date of this century", function()
    assert.equal(1767225600, testing.parse_time("2026-01-01T00:00:00Z"))
  end)

  it("takes a time zone offset into account", function()
    assert.equal(testing.parse_time("2026-01-01T00:00:00Z"),
      testing.parse_time("2026-01-01T01:00:00+01:00"))
  end)

  it("returns nil for text that is not a time", function()
    assert.is_nil(testing.parse_time("yesterday"))
  end)
end)

describe("pack:observe", function()
  it("ends the loop once until_events events are sent", function()
    local events = observer("count"):observe { until_events = 3 }
    assert.same({ 1, 2, 3 }, { events[1].payload.n, events[2].payload.n,
      events[3].payload.n })
  end)

  it("runs the loop on the fake clock", function()
    local events = observer("count"):observe { until_events = 2 }
    assert.same({ "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:10.000000Z" },
      { events[1].payload.at, events[2].payload.at })
  end)

  it("runs on the clock it is given", function()
    local clock = testing.clock("2030-05-01T12:00:00Z")
    local _, used = observer("count"):observe { until_events = 2, clock = clock }
    assert.equal(clock, used)
    assert.equal("2030-05-01T12:00:10.000000Z", clock:now())
  end)

  it("adds what it sent to pack:sent_events", function()
    local pack = observer("count")
    pack:observe { until_events = 2 }
    assert.equal(2, #pack:sent_events())
  end)

  it("returns what was sent when observe returns on its own", function()
    assert.same({ { event = "Seen", payload = { n = 1 } } },
      observer("once"):observe { until_events = 5 })
  end)

  it("raises with the pack's error when observe raises", function()
    assert.matches("^observe raised an error: spec/fixtures/packs/observer%.lua:%d+: "
      .. "the feed is down$", raised(function() observer("raise"):observe() end))
  end)

  it("raises when observe goes on after flyte.sleep returned false", function()
    assert.equal("observe: still running after flyte.sleep returned false 10 times "
      .. "(the host is stopping: end the loop when it does)",
      raised(function() observer("deaf"):observe { until_events = 0 } end))
  end)

  it("raises after max_sleeps calls of flyte.sleep", function()
    assert.equal("observe: still running after 50 calls of flyte.sleep, with 0 "
      .. "event(s) sent",
      raised(function() observer("silent"):observe { until_events = 1, max_sleeps = 50 } end))
  end)

  it("raises when observe runs past its timeout in real time", function()
    local started = core.monotime()
    assert.equal("observe: still running after 0.2 s of real time, with 0 event(s) sent",
      raised(function() observer("busy"):observe { timeout = 0.2 } end))
    assert.is_true(core.monotime() - started < 2)
  end)

  it("puts the real clock and event sink back after an error", function()
    pcall(function() observer("raise"):observe() end)
    assert.is_nil(flyte._clock)
    assert.is_nil(flyte._event_sink)
  end)

  it("raises for a pack with no observe function", function()
    assert.equal("observe: spec/fixtures/packs/minimal.lua has no observe function",
      raised(function() testing.load("spec/fixtures/packs/minimal.lua"):observe() end))
  end)
end)
