-- kill -9 in the middle of a burst, then a restart on the same outbox,
-- five times: every action the stand-in handed out ends with a result (its
-- own, or a FATAL saying the host stopped while handling it), bar at most
-- one take in flight per kill, and the outbox is empty at the end.
--
-- One worker: one take in flight at a time. A take whose reply dies with
-- the process (the stand-in has marked the action taken; the host never
-- read which) cannot be completed by anyone; a restart logs it from the
-- take intent journaled before the request.
local testing = require "flyte.testing"
local core = require "flyte.core"
local flyte = require "flyte"

local PACK = "spec/fixtures/host/crashes.lua"
local KILLS = 5

local function stats(api)
  local status, body = testing.get(api.url .. "/dev/stats")
  assert.equal(200, status)
  return assert(core.json_decode(body))
end

local function enqueue_many(api, command, input, n)
  local res = assert(flyte.http.request { method = "POST",
    url = api.url .. "/dev/actions",
    body = { command = command, input = input, pack = "Crashes", count = n } })
  assert.equal(201, res.status, res.body)
end

local function count(text, pattern)
  return select(2, text:gsub(pattern, ""))
end

local function journal_files(outbox)
  local p = assert(io.popen("ls " .. outbox .. "/slot-* 2>/dev/null"))
  local names = p:read("a")
  p:close()
  return count(names, "journal%-%d+%.log")
end

describe("kill -9 during a burst, and a restart each time", function()
  for _, case in ipairs {
    { what = "of echo actions", command = "echo", input = "x", n = 2000,
      step = 150 },
    { what = "of actions that wait", command = "nap",
      input = { seconds = 0.2 }, n = 1200, step = 100 },
    { what = "of actions that send an event", command = "send", input = 1,
      n = 1000, step = 100 },
  } do
    it(case.what .. " ends each with a result, bar one take per kill",
      function()
        local api = testing.api()
        local outbox = testing.tmpdir() .. "/outbox"
        local settings = { FLYTE_OUTBOX = outbox, FLYTE_WORKERS = 1 }
        local logs = {}
        local host = testing.host(PACK, api, settings)
        finally(function()
          host:stop()
          api:stop()
          os.execute("rm -rf " .. outbox:match("^(.*)/outbox$"))
        end)
        api:wait_registration()
        enqueue_many(api, case.command, case.input, case.n)
        for kill = 1, KILLS do
          -- progress, or every action handed out already (a fast run can
          -- hand out the whole burst before the last kills: those then
          -- hit the host while it finishes and delivers what is left)
          local from = stats(api).done
          testing.wait(function()
            local s = stats(api)
            return s.done >= from + case.step or s.new == 0
          end, 20, "progress before kill " .. kill)
          core.sleep(math.random() * 0.02) -- anywhere in a take or a write
          host:signal("KILL")
          host:wait_exit(5)
          logs[#logs + 1] = host:log()
          host = testing.host(PACK, api, settings)
        end
        -- the last host delivers what is left and finishes the burst
        testing.wait(function()
          local s = stats(api)
          return s.new == 0 and s.pending <= KILLS
        end, 60, "the burst to finish")
        assert.equal(0, host:stop())
        logs[#logs + 1] = host:log()

        local s = stats(api)
        assert.equal(case.n, s.done + s.pending)
        assert.is_true(s.pending <= KILLS, s.pending .. " actions lost in "
          .. KILLS .. " kills")
        local all = table.concat(logs, "\n")
        local lost_logged = count(all, "may have been taken and lost")
        -- on a failure, which actions and what the logs say of each
        local function lost_ids()
          local ids = {}
          for _, a in ipairs(api:state().actions) do
            if a.state == "PENDING" then
              local _, seen = all:gsub("/actions/" .. a.id .. "/", "")
              ids[#ids + 1] = a.id .. " (in the logs " .. seen .. " times)"
            end
          end
          return table.concat(ids, ", ")
        end
        if lost_logged < s.pending then
          error(s.pending .. " actions lost, " .. lost_logged
            .. " logged as possibly lost; lost: " .. lost_ids(), 0)
        end
        assert.is_true(lost_logged <= KILLS)
        assert.equal(0, count(all, "not a valid record"))
        local echoed, fatal = 0, 0
        for _, a in ipairs(api:state().actions) do
          if type(a.result) == "table" then
            if a.result.event == "FATAL" then fatal = fatal + 1
            else echoed = echoed + 1 end
          end
        end
        if os.getenv("CRASH_SPEC_VERBOSE") then
          print(string.format("\n%s: %d done (%d FATAL), %d lost, %d logged "
            .. "as possibly lost, %d events", case.what, s.done, fatal,
            s.pending, lost_logged, #api:events()))
        end
        if case.command == "send" then
          -- a handler's event is journaled before the handler returns: one
          -- for each action that ended with its own result (an event may
          -- arrive twice: a crash after its delivery, before the outbox
          -- heard of it)
          assert.is_true(#api:events() >= echoed, #api:events()
            .. " events for " .. echoed .. " actions that sent one")
        end
        -- all delivered: nothing left on disk
        assert.equal(0, journal_files(outbox))
      end)
  end
end)
