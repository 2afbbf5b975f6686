-- Faults end to end: the stand-in flyte-api fails, delays or garbles chosen
-- requests (api:fault) on each route the host uses, and each spec counts the
-- actions enqueued against those completed: none lost, none completed twice
-- (the stand-in counts the result posts that reach each action), the host
-- still running.
local testing = require "flyte.testing"

local PACK = "spec/fixtures/host/cases.lua"
local PACK_ID = "Cases.team.ops"
local SLOW = 2 -- seconds: a reply slower than the hosts' FLYTE_API_TIMEOUT
local MAX_REQUESTS = 100 -- per spec; a hot loop makes thousands

-- The faults every route is tried with: a name for the spec, the fault.
local FAILURES = {
  { "503", { status = 503 } },
  { "500", { status = 500 } },
  { "404", { status = 404 } },
  { "401", { status = 401 } },
  { "a reply slower than FLYTE_API_TIMEOUT", { delay = SLOW } },
}
local GARBLED = {
  { "a truncated body", { body = "truncated" } },
  { "an invalid body", { body = "invalid" } },
}
local ALL = { table.unpack(FAILURES) }
for _, kind in ipairs(GARBLED) do ALL[#ALL + 1] = kind end

local function settings(extra)
  local s = { FLYTE_API_TIMEOUT = 1, FLYTE_POLL_INTERVAL = 0.5 }
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

local function fault(route, kind, count)
  local f = { route = route, count = count }
  for k, v in pairs(kind) do f[k] = v end
  return f
end

local tmpname = testing.tmpname

local function touch(path)
  assert(io.open(path, "w")):close()
end

local function total_requests(state)
  local n = 0
  for _, count in pairs(state.requests) do n = n + count end
  return n
end

-- Inputs no other spec in the file uses, so that events can be told apart.
local next_input = 0
local function inputs(n)
  local list = {}
  for i = 1, n do list[i] = next_input + i end
  next_input = next_input + n
  return list
end

local function enqueue(api, command, list)
  local ids = {}
  for i, input in ipairs(list) do ids[i] = api:enqueue(command, input, PACK_ID) end
  return ids
end

-- Waits until the host has logged the delivery of each action: it posts
-- nothing more for one after that line, so the stand-in's count is final.
local function wait_delivered(host, ids)
  testing.wait(function()
    local log = host:log()
    for _, id in ipairs(ids) do
      if not log:find("action " .. id .. ": %S+ %-> ") then return false end
    end
    return true
  end, 20, "the host to deliver the results of actions " .. table.concat(ids, ", "))
end

-- What became of each action, and what should have.
local function outcomes(api, ids)
  local by_id, out = {}, {}
  for _, a in ipairs(api:state().actions) do by_id[a.id] = a end
  for i, id in ipairs(ids) do
    local a = by_id[id]
    out[i] = { id = id, state = a.state, results = a.results,
      payload = type(a.result) == "table" and a.result.payload or nil }
  end
  return out
end

local function done_once(ids, list)
  local out = {}
  for i, id in ipairs(ids) do
    out[i] = { id = id, state = "DONE", results = 1, payload = list[i] }
  end
  return out
end

-- Runs `command` for fresh inputs and checks that every action is done
-- exactly once and that the host did not spin; returns the inputs.
local function run_all(api, host, command, n)
  local before = total_requests(api:state())
  local list = inputs(n or 5)
  local ids = enqueue(api, command, list)
  wait_delivered(host, ids)
  assert.same(done_once(ids, list), outcomes(api, ids))
  local state = api:state()
  assert.is_true(total_requests(state) - before < MAX_REQUESTS,
    "a hot loop: " .. total_requests(state) - before .. " requests")
  assert.is_nil(host:exit_status())
  return list
end

local function registrations(api)
  for _, p in ipairs(api:state().packs) do
    if p.id == PACK_ID then return p.registrations end
  end
  return 0
end

describe("faults on take", function()
  local api, host
  lazy_setup(function()
    api = testing.api()
    -- one worker holding one action at a time: a take only happens when
    -- the spec lets it, so a fault meets the take that finds an action
    host = testing.host(PACK, api, settings { FLYTE_WORKERS = 1,
      FLYTE_CONCURRENCY = 1 })
    api:wait_registration()
  end)
  lazy_teardown(function()
    if host then host:stop() end
    if api then api:stop() end
  end)
  after_each(function() api:clear_faults() end)

  for _, kind in ipairs(FAILURES) do
    it("completes every action exactly once after " .. kind[1] .. " on two takes", function()
      api:fault(fault("take", kind[2], 2))
      run_all(api, host, "echo")
      assert.equal(0, api:state().faults_pending)
    end)
  end

  it("registers again after a 404 on take", function()
    local before = registrations(api)
    api:fault { route = "take", status = 404 }
    testing.wait(function() return registrations(api) > before end, 5,
      "the host to register again")
  end)

  it("logs a line naming FLYTE_JWT after a 401 on take", function()
    local mark = #host:log()
    api:fault { route = "take", status = 401 }
    local takes = api:state().requests.take
    -- the line comes when the reply is read, before the next take
    testing.wait(function() return api:state().requests.take > takes + 1 end, 5,
      "the take after the 401")
    assert.matches("FLYTE_JWT", host:log():sub(mark + 1))
  end)

  -- A take moves the action to PENDING on the server, and flyte-api never
  -- hands a PENDING action out again: an action whose take reply is lost
  -- cannot be completed by any client. The host must lose that one only.
  for _, kind in ipairs(GARBLED) do
    it("loses only the action whose take reply had " .. kind[1], function()
      local release = tmpname()
      local busy = api:enqueue("wait", { file = release }, PACK_ID)
      testing.wait(function() return api:action(busy).state == "PENDING" end, 5,
        "the worker to be busy")
      api:fault(fault("take", kind[2], 1)) -- for the next take, which finds an action
      local list = inputs(5)
      local ids = enqueue(api, "echo", list)
      touch(release)
      wait_delivered(host, { busy, table.unpack(ids, 2) })
      os.remove(release)
      local expected = done_once(ids, list)
      expected[1] = { id = ids[1], state = "PENDING", results = 0 }
      assert.same(expected, outcomes(api, ids))
      assert.is_nil(host:exit_status())
    end)
  end
end)

describe("faults on result", function()
  local api, host
  lazy_setup(function()
    api = testing.api()
    host = testing.host(PACK, api, settings())
    api:wait_registration()
  end)
  lazy_teardown(function()
    if host then host:stop() end
    if api then api:stop() end
  end)
  after_each(function() api:clear_faults() end)

  for _, kind in ipairs(ALL) do
    it("completes every action exactly once after " .. kind[1] .. " on two results", function()
      api:fault(fault("result", kind[2], 2))
      run_all(api, host, "echo")
      assert.equal(0, api:state().faults_pending)
    end)
  end

  -- The stand-in stores the result, then the reply is lost: the host sends
  -- it again, the API refuses it (500, not PENDING), and after a few such
  -- answers the host takes the first try as the one that got through.
  local LOST = {
    { "a proxy's 502", { status = 502, after = true } },
    { "a timeout", { delay = SLOW, after = true } },
  }
  for _, kind in ipairs(LOST) do
    it("takes a result as delivered when its reply was lost to " .. kind[1], function()
      local mark = #host:log()
      api:fault(fault("result", kind[2], 1))
      local ids = enqueue(api, "echo", { "lost" })
      wait_delivered(host, ids)
      local a = api:action(ids[1])
      assert.same({ "DONE", "Echoed", "lost" }, { a.state, a.result.event, a.result.payload })
      assert.is_true(a.results >= 2 and a.results <= 4, a.results .. " result posts")
      assert.matches("answered 500 %d+ times after a try whose reply was lost; taking it as "
        .. "delivered", host:log():sub(mark + 1))
      assert.is_nil(host:exit_status())
    end)
  end

  -- A 500 answer is an answer: nothing was stored, and a run of them (a
  -- storage outage) must not end in a result taken as delivered.
  it("completes an action whose result is answered 500 four times in a row", function()
    api:fault { route = "result", status = 500, count = 4 }
    run_all(api, host, "echo", 1)
  end)
end)

describe("faults on event", function()
  local api, host
  lazy_setup(function()
    api = testing.api()
    host = testing.host(PACK, api, settings())
    api:wait_registration()
  end)
  lazy_teardown(function()
    if host then host:stop() end
    if api then api:stop() end
  end)
  after_each(function() api:clear_faults() end)

  -- How many times each payload arrived as an event.
  local function arrivals(list)
    local count = {}
    for _, n in ipairs(list) do count[n] = 0 end
    for _, e in ipairs(api:events()) do
      local n = e.body.payload.n
      if count[n] then count[n] = count[n] + 1 end
    end
    return count
  end

  -- Asserts that each of list arrived exactly once. Events go out one at a
  -- time, in order: once a later one has arrived, nothing more can come for
  -- those before it.
  local function assert_arrived_once(list)
    testing.wait(function() return api:state().faults_pending == 0 end, 15,
      "the faults to be served")
    local last = inputs(1)
    wait_delivered(host, enqueue(api, "send", last))
    testing.wait(function() return arrivals(last)[last[1]] > 0 end, 20,
      "the last event")
    local once = {}
    for _, n in ipairs(list) do once[n] = 1 end
    assert.same(once, arrivals(list))
  end

  for _, kind in ipairs(ALL) do
    it("delivers every event exactly once after " .. kind[1] .. " on two events", function()
      api:fault(fault("event", kind[2], 2))
      assert_arrived_once(run_all(api, host, "send"))
    end)
  end

  -- flyte-api never answers 500 to an event it already has: a run of 500s
  -- is an outage, and the event must still arrive.
  it("delivers an event answered 500 four times in a row", function()
    api:fault { route = "event", status = 500, count = 4 }
    assert_arrived_once(run_all(api, host, "send", 1))
  end)
end)

-- Registration and discovery happen when the host starts: each spec injects
-- its faults and then starts a host.
for _, route in ipairs { "register", "discovery" } do
  describe("faults on " .. route, function()
    local api, host
    lazy_setup(function() api = testing.api() end)
    lazy_teardown(function() if api then api:stop() end end)
    after_each(function()
      if host then host:stop() end
      host = nil
      api:clear_faults()
    end)

    local function start(kind, count)
      api:fault(fault(route, kind, count))
      host = testing.host(PACK, api, settings())
      host:wait_log("registered pack " .. PACK_ID, 15)
    end

    for _, kind in ipairs(ALL) do
      it("registers and completes every action exactly once after " .. kind[1]
        .. " on two tries", function()
        start(kind[2], 2)
        assert.equal(0, api:state().faults_pending)
        run_all(api, host, "echo", 3)
      end)
    end

    it("logs a line naming FLYTE_JWT after a 401", function()
      start({ status = 401 }, 1)
      assert.matches("FLYTE_JWT", host:log())
    end)
  end)
end
