-- How the host polls: at once while actions keep coming, never more than
-- its free workers, not at all without commands; what it does at start
-- when the API is not there yet.
local testing = require "flyte.testing"

local tmpname = testing.tmpname

local function touch(path)
  assert(io.open(path, "w")):close()
end

describe("polling", function()
  local api, host
  before_each(function() api = testing.api() end)
  after_each(function()
    if host then host:stop() end
    api:stop()
    host = nil
  end)

  it("takes the next action at once while actions keep coming", function()
    -- a first host registers the pack, so that actions can be queued
    local first = testing.host("spec/fixtures/host/cases.lua", api)
    api:wait_registration()
    assert.equal(0, first:stop())
    local ids = {}
    for i = 1, 40 do ids[i] = api:enqueue("echo", i) end
    -- a poll interval far longer than the whole run: only back-to-back
    -- takes can finish 40 actions before the deadline
    host = testing.host("spec/fixtures/host/cases.lua", api,
      { FLYTE_POLL_INTERVAL = 30, FLYTE_WORKERS = 1 })
    for i = 1, 40 do
      assert.same(i, api:wait_result(ids[i], 20).payload)
    end
  end)

  it("keeps its connections alive: actions reuse them", function()
    -- (the outbox off: with it, results wait for the disk together and are
    -- posted together, on more connections)
    host = testing.host("spec/fixtures/host/cases.lua", api,
      { FLYTE_WORKERS = 1, FLYTE_OUTBOX = "off" })
    api:wait_registration()
    -- a take and result posts run at once, each on a connection of the
    -- worker's pool: a few connections, then none new
    local ids = {}
    for i = 1, 10 do ids[i] = api:enqueue("echo", i) end
    for i = 1, 10 do assert.same(i, api:wait_result(ids[i]).payload) end
    local before = api:state().connections
    for i = 1, 60 do ids[i] = api:enqueue("echo", i) end
    for i = 1, 60 do assert.same(i, api:wait_result(ids[i]).payload) end
    local opened = api:state().connections - before
    assert.is_true(opened <= 3, "60 actions opened " .. opened
      .. " connections")
  end)

  it("keeps its connections alive with the outbox on, where results are "
    .. "posted together", function()
    -- the results a sync made durable are ready together; a worker posts
    -- two at a time while the API answers within the grace (5 ms), the
    -- rest waiting their turn: 5 connections measured (the take, two
    -- posts, the registration), 35-39 when each went out at once, and
    -- hundreds with libcurl's default cache (4 per transfer running),
    -- which closed them again between syncs. The sanitizer build, slower,
    -- has measured up to 14.
    host = testing.host("spec/fixtures/host/cases.lua", api,
      { FLYTE_WORKERS = 1 })
    api:wait_registration()
    local first, last = api:enqueue("echo", "x", nil, { count = 1500 })
    assert.same("x", api:wait_result(last, 60).payload)
    assert.same("x", api:wait_result(first).payload)
    local opened = api:state().connections
    assert.is_true(opened <= 20, "1,500 actions opened " .. opened
      .. " connections")
  end)

  it("does not hold results back behind an API slower than the grace",
    function()
      -- six results, each post answered after 0.5 s: two go at once, the
      -- other four after waiting 5 ms, not each for a post to end (that
      -- would take three rounds, 1.5 s)
      host = testing.host("spec/fixtures/host/cases.lua", api,
        { FLYTE_WORKERS = 1, FLYTE_OUTBOX = "off" })
      api:wait_registration()
      api:fault { route = "result", delay = 0.5, count = 6 }
      local first, last = api:enqueue("echo", "x", nil, { count = 6 })
      local done = {}
      for id = first, last do
        assert.same("x", api:wait_result(id, 10).payload)
        done[#done + 1] = api:action(id).times.done
      end
      table.sort(done)
      local spread = done[#done] - done[1]
      assert.is_true(spread < 0.4, "the six results arrived over "
        .. spread .. " s")
    end)

  it("never takes an action while the host holds FLYTE_CONCURRENCY", function()
    host = testing.host("spec/fixtures/host/cases.lua", api,
      { FLYTE_WORKERS = 1, FLYTE_CONCURRENCY = 1 })
    api:wait_registration()
    local release = tmpname()
    local busy = api:enqueue("wait", { file = release })
    local waiting = api:enqueue("echo", "next")
    testing.wait(function() return api:action(busy).state == "PENDING" end, 5,
      "the first action to be taken")
    local takes = api:state().requests.take
    -- several poll intervals (0.5 s) pass: the stand-in sees no take
    local deadline = require("flyte.core").monotime() + 1.6
    while require("flyte.core").monotime() < deadline do
      assert.equal("NEW", api:action(waiting).state)
      require("flyte.core").sleep(0.1)
    end
    assert.equal(takes, api:state().requests.take)
    touch(release)
    assert.equal("Echoed", api:wait_result(busy).event)
    assert.equal("next", api:wait_result(waiting).payload)
    os.remove(release)
  end)

  it("does not poll for a pack without commands", function()
    host = testing.host("packs/ticker.lua", api, { TICKER_INTERVAL = "0.3" })
    api:wait_registration()
    api:wait_events(3) -- 0.9 s: past the 0.5 s poll interval
    assert.equal(0, api:state().requests.take)
  end)

  it("keeps trying to register until the API is up", function()
    local port = require("flyte.core").free_port()
    host = testing.host("packs/jira.lua", "http://127.0.0.1:" .. port)
    host:wait_log("not registered %(try 2%): discovery: [^\n]*; trying again in")
    assert.is_nil(host:exit_status())
  end)
end)

describe("observe", function()
  it("sends events on its own until the host stops", function()
    local api = testing.api()
    local host = testing.host("packs/ticker.lua", api, { TICKER_INTERVAL = "0.1" })
    local events = api:wait_events(2)
    assert.equal("Tick", events[1].body.event)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$",
      events[1].body.payload.time)
    -- flyte.sleep returns false when the host stops: it exits promptly
    local started = require("flyte.core").monotime()
    assert.equal(0, host:stop())
    assert.is_true(require("flyte.core").monotime() - started < 5)
    api:stop()
  end)
end)

describe("an API that refuses the token", function()
  it("gets one log line naming FLYTE_JWT, and no hot loop", function()
    local api = testing.api { jwt = "right" }
    local host = testing.host("packs/jira.lua", api, { FLYTE_JWT = "wrong" })
    host:wait_log("not registered %(try 2%): discovery: HTTP 403[^\n]*%(the flyte%-api "
      .. "refused FLYTE_JWT: expired, or without the right for this pack%?%)")
    local status, body = testing.get(host.health_url)
    assert.equal(200, status)
    assert.matches("not registered with the flyte%-api yet: discovery: HTTP 403",
      require("flyte").json.decode(body).Registration.status)
    assert.equal(0, host:stop())
    -- backoff from 0.5 s doubling: a handful of tries, not hundreds
    assert.is_true(api:state().requests.discovery < 10)
    api:stop()
  end)
end)

describe("an idle host", function()
  it("polls once per poll interval, not once per worker", function()
    local api = testing.api()
    local host = testing.host("spec/fixtures/host/cases.lua", api,
      { FLYTE_WORKERS = 4, FLYTE_POLL_INTERVAL = "0.5" })
    api:wait_registration()
    local core = require("flyte.core")
    local t0, takes0 = core.monotime(), api:state().requests.take
    -- wait until at least 4 more takes happened, then compare with the time
    testing.wait(function() return api:state().requests.take >= takes0 + 4 end, 10,
      "four more polls")
    local elapsed = core.monotime() - t0
    -- four workers each polling would make 4 takes within one interval
    assert.is_true(elapsed > 1.4, string.format("4 takes in %.2f s", elapsed))
    host:stop()
    api:stop()
  end)
end)
