--- bench/bench.lua: figures for flyte-host, not a pass/fail test.
--
--   make bench    (or: FLYTE_HOST_BIN=build-release/flyte-host \
--                        lua5.4 bench/bench.lua)
--
-- Every run is self-contained: a fresh stand-in flyte-api
-- (`flyte-host standin`) and a fresh `flyte-host run bench/echo.lua`,
-- both stopped whatever happens. Load comes from the stand-in's bulk
-- enqueue (POST /dev/actions with a count); progress from GET /dev/stats;
-- per-action times from the stand-in's own CLOCK_MONOTONIC stamps. Prints
-- a table and writes build-release/bench.json with the same figures.
--
-- BENCH_ONLY=throughput,json runs some sections only (names: waits, throughput,
-- latency, long, startup, idle, standin, floor, json); BENCH_WAITS=echo
-- runs some of the waits cases only (names: http100, sleep100, exec100, echo).
-- BENCH_RUNS=5 takes the median of 5 runs (default 3).

local ROOT = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;"
  .. package.path
package.cpath = ROOT .. "/build-release/?.so;" .. package.cpath

local core = require "flyte.core"
local flyte = require "flyte"
local testing = require "flyte.testing"

local BINARY = os.getenv("FLYTE_HOST_BIN") or ROOT .. "/build-release/flyte-host"
testing.binary = function() return BINARY end

local PACK = ROOT .. "/bench/echo.lua"
local PACK_ID = "BenchEcho" -- the stand-in's id for it: its name, no labels
local OUT = (ROOT == "." and "" or ROOT .. "/") .. "build-release/bench.json"

-- each figure is the median of this many runs
local RUNS = math.tointeger(tonumber(os.getenv("BENCH_RUNS") or "3"))
if not RUNS or RUNS < 1 then
  error("BENCH_RUNS must be a whole number of at least 1, not '"
    .. os.getenv("BENCH_RUNS") .. "'", 0)
end
local ECHO_N = 20000        -- actions per echo run
local WAIT_N = 2000         -- actions per wait10 run
local OUTBOX_N = 2000       -- per run with the outbox on (fsync: ~10x slower)
local LONG_N = 100000       -- the one long run (memory growth)
local LATENCY_N = 1000      -- paced actions per latency run
local LATENCY_GAP = 0.003   -- seconds between them
local STARTS = 5            -- starts timed for start → registered
local IDLE_SECONDS = 10
local WRK_ARGS = "-t2 -c4 -d5s"
local INPUT = { id = 42, text = "printer on fire" }

--- Small helpers ---------------------------------------------------------------

local function sh(command)
  local p = assert(io.popen(command))
  local text = p:read("a")
  p:close()
  return text
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

local function median(list)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  if #s == 0 then return nil end
  table.sort(s)
  local mid = (#s + 1) // 2
  if #s % 2 == 1 then return s[mid] end
  return (s[mid] + s[mid + 1]) / 2
end

--- Nearest-rank percentile of a sorted list.
local function percentile(sorted, p)
  return sorted[math.max(1, math.ceil(p / 100 * #sorted))]
end

--- The median of field `key` over a list of tables.
local function median_of(list, key)
  local values = {}
  for _, t in ipairs(list) do values[#values + 1] = t[key] end
  return median(values)
end

local function round(x, places)
  if x == nil then return nil end
  local m = 10 ^ (places or 0)
  local r = math.floor(x * m + 0.5) / m
  if (places or 0) == 0 then return math.tointeger(r) end
  return r
end

--- Removes a temporary directory made by flyte.testing, and nothing else.
local function remove_tmp(path)
  local dir = path and path:match("^(/tmp/flyte%-spec%.%w+)")
  if dir then os.execute("rm -rf '" .. dir .. "'") end
end

--- The process ---------------------------------------------------------------

local CLK_TCK = tonumber(sh("getconf CLK_TCK"):match("%d+")) or 100

--- user + sys CPU of a process (all its threads), in ms: /proc/PID/stat
-- fields 14 and 15, in clock ticks.
local function cpu_ms(pid)
  local stat = assert(read_file("/proc/" .. pid .. "/stat"), "no process " .. pid)
  local fields = {}
  -- field 2 (comm) may hold spaces: split after its closing parenthesis
  for word in stat:match("^.*%)%s(.*)$"):gmatch("%S+") do
    fields[#fields + 1] = word
  end
  -- fields[1] is field 3 (state), so field N is fields[N - 2]
  return (tonumber(fields[12]) + tonumber(fields[13])) * 1000 / CLK_TCK
end

--- VmRSS and RssAnon of a process, in kB.
local function memory(pid)
  local status = assert(read_file("/proc/" .. pid .. "/status"),
    "no process " .. pid)
  return { vmrss_kb = tonumber(status:match("VmRSS:%s*(%d+)")),
           rssanon_kb = tonumber(status:match("RssAnon:%s*(%d+)")) }
end

--- Waits until pid is flyte-host itself (testing.spawn starts it through
-- `env`, which execs it), so that /proc shows the host and nothing else.
local function wait_is_host(pid)
  testing.wait(function()
    local comm = read_file("/proc/" .. pid .. "/comm") or ""
    return comm:match("^flyte%-host")
  end, 5, "process " .. pid .. " to be flyte-host")
end

--- The stand-in ----------------------------------------------------------------

local function request(method, url, body)
  local res, err = flyte.http.request { method = method, url = url,
    body = body, timeout = 30 }
  if not res then error(method .. " " .. url .. ": " .. err, 2) end
  if res.status >= 300 then
    error(method .. " " .. url .. ": HTTP " .. res.status .. " " .. res.body, 2)
  end
  return assert(flyte.json.decode(res.body))
end

local function stats(api)
  return request("GET", api.url .. "/dev/stats")
end

--- Queues n copies of an action in one request; returns the first and last id.
local function enqueue_bulk(api, command, n)
  local res = request("POST", api.url .. "/dev/actions",
    { command = command, input = INPUT, pack = PACK_ID, count = n })
  return res.id, res.last
end

--- Waits (polling /dev/stats every 10 ms) until `n` actions are done;
-- returns the stats and the time it saw them.
local function wait_done(api, n, timeout)
  local s = testing.wait(function()
    local s = stats(api)
    return s.done >= n and s
  end, timeout, n .. " actions to be done")
  return s, core.monotime()
end

--- A fresh stand-in and host of bench/echo.lua (settings: extra FLYTE_*
-- environment), registered; runs fn(api, host) and stops both whatever
-- happens. Returns what fn returns; raises what it raised.
local function session(settings, fn, pack, binary)
  local api, host
  local saved = testing.binary
  local ok, result = pcall(function()
    api = testing.api() -- this binary's stand-in
    if binary then testing.binary = function() return binary end end
    host = testing.host(pack or PACK, api, settings)
    testing.binary = saved
    wait_is_host(host.pid)
    api:wait_registration(10)
    return fn(api, host)
  end)
  testing.binary = saved
  if host then pcall(host.stop, host) end
  if api then pcall(api.stop, api) end
  if ok then
    -- on an error the logs stay, for a look
    if host then remove_tmp(host.dir); remove_tmp(host.outbox) end
    if api then remove_tmp(api.process.dir) end
  end
  if not ok then error(result, 0) end
  return result
end

--- Handlers that wait: the previous binary beside this one ---------------------

-- FLYTE_PREV_BIN: the previous commit's flyte-host (`make bench` builds
-- it); its rows run with its own defaults, in the same run, because this
-- machine's speed swings by a third within minutes.
local PREV = os.getenv("FLYTE_PREV_BIN")
local WAITS_PACK = ROOT .. "/bench/waits.lua"
local WAITS_ID = "BenchWaits"

local WAITS = {
  { key = "http100", label = "1 HTTP call to a 100 ms service",
    command = "fetch", n = 4000, n_prev = 200,
    input = function(api) return { url = api.url .. "/dev/slow?ms=100" } end },
  { key = "sleep100", label = "flyte.sleep(0.1)", command = "nap",
    n = 4000, n_prev = 200, input = function() return { seconds = 0.1 } end },
  { key = "exec100", label = "flyte.exec of a 100 ms process",
    command = "run", n = 1000,
    input = function() return { cmd = { "sleep", "0.1" } } end },
  { key = "echo", label = "echo", command = "echo", n = 20000,
    n_prev = 20000, input = function() return INPUT end },
}

--- The outbox's counters from the host's /metrics: records, syncs (nil
-- for a binary without them).
local function outbox_counters(host)
  local ok, status, body = pcall(testing.get, host.health_url .. "metrics")
  if not ok or status ~= 200 then return nil end
  local records = body:match("\nflyte_outbox_records_total (%d+)")
  local syncs = body:match("\nflyte_outbox_syncs_total (%d+)")
  if not records then return nil end
  return { records = tonumber(records), syncs = tonumber(syncs) }
end

--- One run of `case` on `binary` with `settings`; nil when n is nil.
local function waits_run(binary, case, n, settings)
  if not n then return nil end
  return session(settings, function(api, host)
    core.sleep(0.3)
    local idle = memory(host.pid)
    local c0 = outbox_counters(host)
    local cpu0 = cpu_ms(host.pid)
    local res = request("POST", api.url .. "/dev/actions",
      { command = case.command, input = case.input(api), pack = WAITS_ID,
        count = n })
    local _, t_end = wait_done(api, n, 300)
    local cpu1 = cpu_ms(host.pid)
    local c1 = outbox_counters(host)
    local a = api:action(res.id)
    assert(a.result and a.result.event == "Echoed",
      "action " .. res.id .. " ended with " .. flyte.json.encode(a.result or {}))
    -- what stays once the burst is over (a worker gives freed memory back
    -- after a second idle)
    core.sleep(1.5)
    local seconds = t_end - a.times.taken
    local syncs = c0 and c1 and c1.syncs - c0.syncs
    return { actions_per_s = n / seconds,
      cpu_ms_per_1k = (cpu1 - cpu0) / n * 1000,
      idle_kb = idle.rssanon_kb, end_kb = memory(host.pid).rssanon_kb,
      syncs_per_s = syncs and syncs / seconds,
      records_per_sync = syncs and syncs > 0
        and (c1.records - c0.records) / syncs }
  end, WAITS_PACK, binary)
end

local function waits_row(runs, n)
  if #runs == 0 then return nil end
  return { actions = n,
    actions_per_s = round(median_of(runs, "actions_per_s")),
    cpu_ms_per_1k = round(median_of(runs, "cpu_ms_per_1k"), 1),
    idle_kb = round(median_of(runs, "idle_kb")),
    end_kb = round(median_of(runs, "end_kb")),
    syncs_per_s = round(median_of(runs, "syncs_per_s")),
    records_per_sync = round(median_of(runs, "records_per_sync"), 1) }
end

-- BENCH_WAITS=echo,http100 runs some of the cases only.
local function listed(list, key)
  if not list or list == "" then return true end
  for name in list:gmatch("[^,%s]+") do
    if name == key then return true end
  end
  return false
end

local function bench_waits(report)
  report.waits = { previous_binary = PREV }
  for _, case in ipairs(WAITS) do
    if not listed(os.getenv("BENCH_WAITS"), case.key) then goto next end
    -- outbox on and off alternate run by run, each beside the previous
    -- binary: the machine's speed swings by a third within minutes, and
    -- on/off ratios of runs minutes apart showed the swing more than the
    -- outbox. Which goes first alternates too, so that neither always
    -- runs after the other.
    local runs = { on = { new = {}, previous = {} },
                   off = { new = {}, previous = {} } }
    for run = 1, RUNS do
      local order = run % 2 == 1 and { "on", "off" } or { "off", "on" }
      for _, outbox in ipairs(order) do
        local settings = outbox == "off" and { FLYTE_OUTBOX = "off" } or {}
        local mine = runs[outbox]
        mine.new[#mine.new + 1] = waits_run(BINARY, case, case.n, settings)
        if PREV then
          mine.previous[#mine.previous + 1] =
            waits_run(PREV, case, case.n_prev, settings)
        end
      end
    end
    for _, outbox in ipairs { "on", "off" } do
      report.waits[case.key .. "_outbox_" .. outbox] = {
        label = case.label .. ", outbox " .. outbox,
        new = waits_row(runs[outbox].new, case.n),
        previous = PREV and waits_row(runs[outbox].previous, case.n_prev),
      }
    end
    ::next::
  end
end

--- Throughput, CPU, connections, memory -----------------------------------------

local FLOOR = (BINARY:match("^(.*)/[^/]*$") or ".") .. "/flyte-bench-floor"
local FLOOR_REQUESTS = 20000
local FLOOR_PAIRED = 5000 -- requests after each throughput run that has one

local function floor_json(args)
  local text = sh(FLOOR .. " " .. args)
  local value = flyte.json.decode(text)
  assert(value, "no JSON from " .. FLOOR .. " " .. args .. ": " .. text)
  return value
end

--- One run: `n` copies of `command` queued at once. opts: workers, command,
-- n, outbox (true: the default outbox, with fsync), log (level), floor
-- (true: then the libcurl floor against the same stand-in, at once, so
-- that the two figures share the machine's moment; it swings by a third
-- within minutes on a shared VM).
local function load_run(opts)
  local settings = { FLYTE_WORKERS = opts.workers,
    FLYTE_LOG_LEVEL = opts.log or "warn" }
  if not opts.outbox then settings.FLYTE_OUTBOX = "off" end
  return session(settings, function(api, host)
    core.sleep(0.3) -- past start-up: the first poll, the idle state
    local idle = memory(host.pid)
    local s0 = stats(api)
    local cpu0, api_cpu0 = cpu_ms(host.pid), cpu_ms(api.process.pid)
    local first = enqueue_bulk(api, opts.command, opts.n)
    local s1, t_end = wait_done(api, opts.n, opts.timeout or 120)
    local cpu1, api_cpu1 = cpu_ms(host.pid), cpu_ms(api.process.pid)
    local a = api:action(first)
    assert(a.result and a.result.event == "Echoed",
      "action " .. first .. " ended with " .. flyte.json.encode(a.result or {}))
    local floor_us
    if opts.floor then -- the queue is empty now: these takes find nothing
      floor_us = floor_json(string.format("http %s/v1/packs/%s/actions/take %d",
        api.url, PACK_ID, FLOOR_PAIRED)).libcurl_us
    end
    -- what the host keeps once the burst is over: a worker gives freed
    -- memory back after a second idle
    core.sleep(1.5)
    local done = memory(host.pid)
    -- from the first take: the host may be in a poll wait (0.5 s) when the
    -- load arrives, which is not the host's speed
    local seconds = t_end - a.times.taken
    return {
      actions_per_s = opts.n / seconds,
      cpu_ms_per_1k = (cpu1 - cpu0) / opts.n * 1000,
      -- the stand-in's share (with this script's progress polls)
      api_cpu_ms_per_1k = (api_cpu1 - api_cpu0) / opts.n * 1000,
      floor_ms_per_1k = floor_us and floor_us * 2,
      connections_per_1k = (s1.connections - s0.connections) / opts.n * 1000,
      takes_per_action = (s1.takes - s0.takes) / opts.n,
      idle = idle, ["end"] = done,
    }
  end)
end

local function summarise(runs)
  local function mem(key, field)
    local values = {}
    for _, r in ipairs(runs) do values[#values + 1] = r[key][field] end
    return median(values)
  end
  return {
    actions_per_s = round(median_of(runs, "actions_per_s")),
    cpu_ms_per_1k = round(median_of(runs, "cpu_ms_per_1k"), 1),
    api_cpu_ms_per_1k = round(median_of(runs, "api_cpu_ms_per_1k"), 1),
    -- an action's two requests through libcurl alone, measured right after
    -- each run, and the host's CPU above that, run by run
    floor_ms_per_1k = round(median_of(runs, "floor_ms_per_1k"), 1),
    own_cpu_ms_per_1k = runs[1].floor_ms_per_1k and round(median((function()
      local t = {}
      for i, r in ipairs(runs) do t[i] = r.cpu_ms_per_1k - r.floor_ms_per_1k end
      return t
    end)()), 1),
    connections_per_1k = round(median_of(runs, "connections_per_1k"), 2),
    takes_per_action = round(median_of(runs, "takes_per_action"), 3),
    memory_idle = { vmrss_kb = mem("idle", "vmrss_kb"),
                    rssanon_kb = mem("idle", "rssanon_kb") },
    memory_end = { vmrss_kb = mem("end", "vmrss_kb"),
                   rssanon_kb = mem("end", "rssanon_kb") },
    runs = #runs,
    actions_per_s_runs = (function()
      local t = {}
      for i, r in ipairs(runs) do t[i] = round(r.actions_per_s) end
      return t
    end)(),
  }
end

local THROUGHPUT = {
  { key = "echo_w1", label = "echo, 1 worker", workers = 1, command = "echo",
    n = ECHO_N, floor = true },
  { key = "echo_w4", label = "echo, 4 workers", workers = 4, command = "echo",
    n = ECHO_N, floor = true },
  { key = "echo_w16", label = "echo, 16 workers", workers = 16,
    command = "echo", n = ECHO_N },
  { key = "echo_w4_outbox_on", label = "echo, 4 workers, outbox on",
    workers = 4, command = "echo", n = OUTBOX_N, outbox = true },
  { key = "echo_w4_log_info", label = "echo, 4 workers, log info",
    workers = 4, command = "echo", n = ECHO_N, log = "info" },
  { key = "wait10_w4", label = "wait10, 4 workers", workers = 4,
    command = "wait10", n = WAIT_N, ideal = 4 / 0.01 },
  { key = "wait10_w16", label = "wait10, 16 workers", workers = 16,
    command = "wait10", n = WAIT_N, ideal = 16 / 0.01 },
}

local function bench_throughput(report)
  report.throughput = {}
  for _, case in ipairs(THROUGHPUT) do
    local runs = {}
    for i = 1, RUNS do runs[i] = load_run(case) end
    local row = summarise(runs)
    row.workers, row.command, row.actions = case.workers, case.command, case.n
    row.outbox = case.outbox and "on (fsync per write)" or "off"
    row.log_level = case.log or "warn"
    if case.ideal then row.ideal_actions_per_s = round(case.ideal) end
    report.throughput[case.key] = row
    io.stderr:write(string.format("  %-28s %8d actions/s\n", case.label,
      row.actions_per_s))
  end
end

--- One run of LONG_N actions with 4 workers: RssAnon must not grow with
-- the count.
local function bench_long(report)
  local run = load_run { workers = 4, command = "echo", n = LONG_N,
    timeout = 300 }
  report.memory_long = {
    workers = 4, actions = LONG_N, runs = 1,
    idle = run.idle, ["end"] = run["end"],
    actions_per_s = round(run.actions_per_s),
    cpu_ms_per_1k = round(run.cpu_ms_per_1k, 1),
  }
end

--- Latency --------------------------------------------------------------------

local function latency_run()
  return session({ FLYTE_WORKERS = 4, FLYTE_OUTBOX = "off",
                   FLYTE_LOG_LEVEL = "warn", FLYTE_POLL_INTERVAL = 0.5 },
    function(api)
      core.sleep(0.3)
      local t0 = core.monotime()
      for i = 1, LATENCY_N do
        local wait = t0 + (i - 1) * LATENCY_GAP - core.monotime()
        if wait > 0 then core.sleep(wait) end
        api:enqueue("echo", INPUT, PACK_ID)
      end
      wait_done(api, LATENCY_N, 60)
      local queued, taken = {}, {}
      for _, a in ipairs(api:state().actions) do
        queued[#queued + 1] = (a.times.done - a.times.queued) * 1000
        taken[#taken + 1] = (a.times.done - a.times.taken) * 1000
      end
      table.sort(queued)
      table.sort(taken)
      return { queued_p50 = percentile(queued, 50),
               queued_p99 = percentile(queued, 99),
               taken_p50 = percentile(taken, 50),
               taken_p99 = percentile(taken, 99) }
    end)
end

local function bench_latency(report)
  local runs = {}
  for i = 1, RUNS do runs[i] = latency_run() end
  report.latency = {
    workers = 4, actions = LATENCY_N, gap_ms = LATENCY_GAP * 1000,
    poll_interval_s = 0.5, runs = RUNS,
    queued_to_done_ms = { p50 = round(median_of(runs, "queued_p50"), 2),
                          p99 = round(median_of(runs, "queued_p99"), 2) },
    taken_to_done_ms = { p50 = round(median_of(runs, "taken_p50"), 3),
                         p99 = round(median_of(runs, "taken_p99"), 3) },
  }
end

--- Start-up -------------------------------------------------------------------

local function bench_startup(report)
  local after_start, registration = {}, {}
  for i = 1, STARTS do
    session({ FLYTE_OUTBOX = "off" }, function(_, host)
      host:wait_log("registered pack")
      local reg, since = host:log():match(
        "registered pack %S+ with %S+ %(([%d.]+) ms; ([%d.]+) ms after start%)")
      assert(since, "no 'ms after start' in the log: " .. host.log_path)
      after_start[i], registration[i] = tonumber(since), tonumber(reg)
    end)
  end
  report.startup = {
    starts = STARTS,
    start_to_registered_ms = round(median(after_start), 1),
    registration_request_ms = round(median(registration), 1),
    samples_ms = after_start,
  }
end

--- Idle wake-ups --------------------------------------------------------------

--- Parses `strace -c` output: total calls and calls by syscall.
local function parse_strace(text)
  local total, by = 0, {}
  for line in text:gmatch("[^\n]+") do
    -- % time  seconds  usecs/call  calls  [errors]  syscall
    local calls, name = line:match("^%s*[%d.]+%s+[%d.]+%s+%d+%s+(%d+)%s+.-(%S+)$")
    if calls then
      if name == "total" then total = tonumber(calls)
      else by[name] = tonumber(calls) end
    end
  end
  return total, by
end

local function bench_idle(report)
  local out = os.tmpname()
  report.idle = session({ FLYTE_POLL_INTERVAL = 5 }, function(api, host)
    core.sleep(1) -- past the first poll after registration
    local s0 = stats(api)
    local cpu0 = cpu_ms(host.pid)
    local threads = tonumber(sh("ls /proc/" .. host.pid .. "/task | wc -l")
      :match("%d+"))
    local rc = os.execute(string.format(
      "timeout -s INT %d strace -f -c -o %s -p %d 2>/dev/null",
      IDLE_SECONDS, out, host.pid))
    local s1 = stats(api)
    local cpu1 = cpu_ms(host.pid)
    local text = read_file(out) or ""
    assert(rc or text ~= "", "strace did not run (is ptrace allowed?)")
    local total, by = parse_strace(text)
    return { seconds = IDLE_SECONDS, poll_interval_s = 5, threads = threads,
             syscalls = total, syscalls_by_name = by,
             takes = s1.takes - s0.takes,
             cpu_ms = round(cpu1 - cpu0, 1) }
  end)
  os.remove(out)
end

--- The stand-in's own capacity ------------------------------------------------

--- Runs wrk against url; returns requests/s and the CPU per request, in
-- microseconds, of wrk itself (GNU time) and of the stand-in (pid).
local function wrk(url, script, pid)
  local command = "wrk " .. WRK_ARGS .. (script and " -s " .. script or "")
    .. " " .. url
  local cpu0 = cpu_ms(pid)
  local text = sh("/usr/bin/time -f 'wrk-cpu %U %S' " .. command .. " 2>&1")
  local api_ms = cpu_ms(pid) - cpu0
  local rate = tonumber(text:match("Requests/sec:%s*([%d.]+)"))
  local count = tonumber(text:match("(%d+) requests in"))
  local user, sys = text:match("wrk%-cpu ([%d.]+) ([%d.]+)")
  assert(rate and count and user,
    "no Requests/sec from `" .. command .. "`:\n" .. text)
  local bad = tonumber(text:match("Non%-2xx or 3xx responses:%s*(%d+)")) or 0
  assert(bad == 0, bad .. " non-2xx answers from `" .. command .. "`")
  return rate, (tonumber(user) + tonumber(sys)) * 1e6 / count,
    api_ms * 1000 / count
end

local function bench_standin(report)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write('wrk.method = "POST"\n')
  f:close()
  local take, discovery, wrk_us, api_us = {}, {}, {}, {}
  local ok, err = pcall(function()
    for i = 1, RUNS do
      session({ FLYTE_OUTBOX = "off" }, function(api, host)
        -- the pack stays registered with the stand-in; the host goes, so
        -- that only wrk talks to it
        host:stop()
        local pid = api.process.pid
        take[i], wrk_us[i], api_us[i] = wrk(api.url .. "/v1/packs/" .. PACK_ID
          .. "/actions/take", script, pid)
        discovery[i] = wrk(api.url .. "/v1", nil, pid)
      end)
    end
  end)
  os.remove(script)
  if not ok then error(err, 0) end
  local take_rps = median(take)
  report.standin = {
    wrk = "wrk " .. WRK_ARGS, runs = RUNS,
    take_empty_requests_per_s = round(take_rps),
    -- CPU per take request, in microseconds: wrk's own and the stand-in's
    wrk_cpu_us_per_request = round(median(wrk_us), 1),
    api_cpu_us_per_request = round(median(api_us), 1),
    discovery_requests_per_s = round(median(discovery)),
    -- an action costs the stand-in a take and a result
    actions_per_s_ceiling = round(take_rps / 2),
  }
end

--- Floors: what the libraries and the machine cost any host ------------------

--- bench/floor.c: RssAnon of a process that has only loaded and set up the
-- host's libraries, and client CPU per request to the stand-in through
-- libcurl and over a bare socket.
local function bench_floor(report)
  local rss, curl_us, socket_us = {}, {}, {}
  for i = 1, RUNS do
    rss[i] = floor_json("memory").rss_anon_kb
    session({ FLYTE_OUTBOX = "off" }, function(api, host)
      host:stop() -- as for wrk: only the floor program talks to the stand-in
      local f = floor_json(string.format("http %s/v1/packs/%s/actions/take %d",
        api.url, PACK_ID, FLOOR_REQUESTS))
      curl_us[i], socket_us[i] = f.libcurl_us, f.socket_us
    end)
  end
  report.floor = {
    runs = RUNS, requests = FLOOR_REQUESTS,
    libraries_rssanon_kb = round(median(rss)),
    libcurl_us_per_request = round(median(curl_us), 1),
    socket_us_per_request = round(median(socket_us), 1),
  }
end

--- The JSON codec -------------------------------------------------------------

--- An issue as a Jira-like API returns it: about 2 KB of JSON.
local function issue(i)
  local comments = {}
  for c = 1, 4 do
    comments[c] = {
      id = i * 10 + c,
      author = { name = "user" .. c, displayName = "User Number " .. c,
                 email = "user" .. c .. "@example.com", active = true },
      body = "Checked the printer again: still smoking. Facilities say the "
        .. "fuse is fine, so it is the unit itself. Café closed meanwhile.",
      created = "2026-11-28T20:0" .. c .. ":34.123Z",
    }
  end
  return {
    id = 10000 + i,
    key = "OPS-" .. i,
    self = "https://jira.example.com/rest/api/2/issue/" .. (10000 + i),
    fields = {
      summary = "Printer on fire on the third floor (#" .. i .. ")",
      description = ("The printer by the lifts is on fire. \"Again\", says "
        .. "the note taped to it.\n"):rep(3),
      priority = { id = 3, name = "Major" },
      status = { id = 10001, name = "In Progress", category = "indeterminate" },
      labels = { "hardware", "urgent", "floor-3", "fire" },
      reporter = { name = "jdoe", displayName = "Jane Doe",
                   email = "jdoe@example.com", active = true },
      created = "2026-11-28T20:02:34.123Z",
      updated = "2026-11-28T21:15:00.000Z",
      estimate_hours = 2.5,
      progress = 0.125,
      votes = 7,
      watchers = { 101, 102, 103, 104, 105, 106, 107, 108 },
      components = { { id = 1, name = "Printers" },
                     { id = 2, name = "Facilities" } },
      comments = comments,
    },
  }
end

--- Runs fn repeatedly for at least `seconds`; returns runs per second.
local function rate(fn, seconds)
  collectgarbage()
  local n, t0 = 0, core.monotime()
  local elapsed
  repeat
    fn()
    n = n + 1
    elapsed = core.monotime() - t0
  until elapsed >= seconds
  return n / elapsed
end

local function bench_json(report)
  local cjson = require "cjson"
  local payloads = {
    ["2k"] = issue(1),
    ["1m"] = (function()
      local issues = {}
      for i = 1, 505 do issues[i] = issue(i) end
      return { total = #issues, issues = issues }
    end)(),
  }
  local codecs = {
    flyte = { encode = flyte.json.encode, decode = flyte.json.decode },
    cjson = { encode = cjson.encode, decode = cjson.decode },
  }
  local result = { sizes_bytes = {}, runs = RUNS,
    note = "MB/s of the flyte.json text of the same data (10^6 bytes)" }
  for size, value in pairs(payloads) do
    local text = flyte.json.encode(value)
    result.sizes_bytes[size] = #text
    assert(cjson.decode(text), "cjson cannot read the payload")
    local seconds = #text > 100000 and 0.3 or 0.15
    for name, codec in pairs(codecs) do
      result[name] = result[name] or {}
      local enc, dec = {}, {}
      for i = 1, RUNS do
        enc[i] = rate(function() codec.encode(value) end, seconds) * #text / 1e6
        dec[i] = rate(function() codec.decode(text) end, seconds) * #text / 1e6
      end
      result[name]["encode_" .. size .. "_mb_s"] = round(median(enc), 1)
      result[name]["decode_" .. size .. "_mb_s"] = round(median(dec), 1)
    end
  end
  report.json = result
end

--- The machine ----------------------------------------------------------------

local function machine()
  local cpuinfo = read_file("/proc/cpuinfo") or ""
  return {
    nproc = tonumber(sh("nproc"):match("%d+")),
    cpu = cpuinfo:match("model name%s*:%s*([^\n]+)") or "unknown",
    kernel = sh("uname -sr"):gsub("%s+$", ""),
    date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    -- others' work on the machine skews every figure: this says how much
    loadavg = (read_file("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)"),
    binary = BINARY,
    clk_tck = CLK_TCK,
  }
end

--- The table ------------------------------------------------------------------

local function fmt(v, pattern)
  if v == nil then return "-" end
  return string.format(pattern or "%s", v)
end

local function print_report(r)
  local m = r.machine
  print(string.format("flyte-host bench, %s", m.date))
  print(string.format("machine: %d CPUs, %s, %s; load average %s at start; "
    .. "%s", m.nproc, m.cpu, m.kernel, m.loadavg or "?", m.binary))
  print(string.format("each figure is the median of %d runs unless said; "
    .. "the stand-in and this script share the machine with the host", RUNS))

  if r.waits then
    print()
    print("WAITS  handlers that wait, all defaults (workers one per CPU, "
      .. "concurrency 256) unless said;")
    print("       this binary beside the previous one ("
      .. (r.waits.previous_binary or "not built") .. "), same run;")
    print("       outbox on and off alternate run by run")
    print("       end MB: RssAnon 1.5 s after the last result")
    print(string.format("  %-46s %6s %9s %9s %8s %8s %7s %7s | %6s %9s %9s "
      .. "%8s %8s", "", "actions", "actions/s", "CPU ms/1k", "idle MB",
      "end MB", "syncs/s", "rec/sync", "prev n", "actions/s", "CPU ms/1k",
      "idle MB", "end MB"))
    for _, case in ipairs(WAITS) do
      for _, outbox in ipairs { "on", "off" } do
        local row = r.waits[case.key .. "_outbox_" .. outbox]
        if row then
          local n, p = row.new or {}, row.previous or {}
          local function mb(kb) return kb and string.format("%.1f", kb / 1024) end
          print(string.format("  %-46s %6s %9s %9s %8s %8s %7s %7s | %6s "
            .. "%9s %9s %8s %8s",
            row.label, fmt(n.actions), fmt(n.actions_per_s),
            fmt(n.cpu_ms_per_1k), fmt(mb(n.idle_kb)), fmt(mb(n.end_kb)),
            fmt(n.syncs_per_s), fmt(n.records_per_sync),
            fmt(p.actions), fmt(p.actions_per_s), fmt(p.cpu_ms_per_1k),
            fmt(mb(p.idle_kb)), fmt(mb(p.end_kb))))
        end
      end
    end
    -- the journal's price (issue 12: at least 90% of the throughput, at
    -- most 1.15 times the CPU per action)
    for _, key in ipairs { "echo", "http100", "sleep100" } do
      for _, which in ipairs { "new", "previous" } do
        local on = r.waits[key .. "_outbox_on"]
        local off = r.waits[key .. "_outbox_off"]
        on, off = on and on[which], off and off[which]
        if on and off and on.actions_per_s and off.actions_per_s then
          print(string.format("  %s%s, outbox on vs off: %d%% of the "
            .. "throughput, %.2f times the CPU per action", key,
            which == "previous" and ", previous binary" or "",
            round(on.actions_per_s * 100 / off.actions_per_s),
            on.cpu_ms_per_1k / off.cpu_ms_per_1k))
        end
      end
    end
  end

  if r.throughput then
    print()
    print("THROUGHPUT  actions queued at once; outbox off, log warn unless said;")
    print("            timed from the first take to the last result; "
      .. "CPU = user+sys of flyte-host alone,")
    print("            API = of the stand-in (serving the host and this "
      .. "script's progress polls)")
    print(string.format("  %-28s %7s %9s %13s %9s %9s %8s %9s", "", "actions",
      "actions/s", "(runs: range)", "CPU ms/1k", "API ms/1k", "conns/1k",
      "takes/act"))
    for _, case in ipairs(THROUGHPUT) do
      local t = r.throughput[case.key]
      if t then
        local low, high = math.huge, 0
        for _, v in ipairs(t.actions_per_s_runs) do
          low, high = math.min(low, v), math.max(high, v)
        end
        local note = t.ideal_actions_per_s
          and string.format("  (at most %d)", t.ideal_actions_per_s) or ""
        print(string.format("  %-28s %7d %9s %13s %9s %9s %8s %9s%s",
          case.label, t.actions, fmt(t.actions_per_s), low .. "-" .. high,
          fmt(t.cpu_ms_per_1k, "%.1f"), fmt(t.api_cpu_ms_per_1k, "%.1f"),
          fmt(t.connections_per_1k, "%.2f"),
          fmt(t.takes_per_action, "%.2f"), note))
      end
    end
    print("  outbox on: fsync per write, in a directory under /tmp; wait10: "
      .. "10 ms per action, so at most workers/0.01 s")
    print("  conns/1k: TCP connections the stand-in accepted (the bench's "
      .. "kept-alive one too)")
  end

  if r.latency then
    local l = r.latency
    print()
    print(string.format("LATENCY  %d actions, one every %g ms, 4 workers, "
      .. "poll interval %g s; stand-in's clock", l.actions, l.gap_ms,
      l.poll_interval_s))
    print(string.format("  %-30s %10s %10s", "", "p50 ms", "p99 ms"))
    print(string.format("  %-30s %10.2f %10.2f", "queued -> done",
      l.queued_to_done_ms.p50, l.queued_to_done_ms.p99))
    print(string.format("  %-30s %10.3f %10.3f", "taken -> done (host's share)",
      l.taken_to_done_ms.p50, l.taken_to_done_ms.p99))
    print("  queued -> done includes the poll wait: when the queue runs empty "
      .. "a worker polls again")
    print("  only after the poll interval (0.5 s), so an action queued then "
      .. "waits for that poll")
  end

  if r.throughput or r.memory_long then
    print()
    print("MEMORY  of flyte-host, kB (after: 1.5 s after the last result)")
    print(string.format("  %-44s %10s %10s", "", "VmRSS", "RssAnon"))
    for _, k in ipairs { { "echo_w4", 4 }, { "echo_w16", 16 } } do
      local t = r.throughput and r.throughput[k[1]]
      if t then
        print(string.format("  %-44s %10s %10s", k[2]
          .. " workers, idle after registration", fmt(t.memory_idle.vmrss_kb),
          fmt(t.memory_idle.rssanon_kb)))
        print(string.format("  %-44s %10s %10s", k[2] .. " workers, after "
          .. t.actions .. " actions", fmt(t.memory_end.vmrss_kb),
          fmt(t.memory_end.rssanon_kb)))
      end
    end
    local g = r.memory_long
    if g then
      print(string.format("  %-44s %10s %10s", "4 workers, idle (long run)",
        fmt(g.idle.vmrss_kb), fmt(g.idle.rssanon_kb)))
      print(string.format("  %-44s %10s %10s  (one run; %d actions/s)",
        "4 workers, after " .. g.actions .. " actions", fmt(g["end"].vmrss_kb),
        fmt(g["end"].rssanon_kb), g.actions_per_s))
    end
  end

  if r.startup then
    print()
    print(string.format("START-UP  process start -> registered: %.1f ms "
      .. "(median of %d starts; of which the registration request %.1f ms)",
      r.startup.start_to_registered_ms, r.startup.starts,
      r.startup.registration_request_ms))
  end

  if r.idle then
    local i = r.idle
    local names = {}
    for name, calls in pairs(i.syscalls_by_name) do
      names[#names + 1] = { name, calls }
    end
    table.sort(names, function(a, b) return a[2] > b[2] end)
    local top = {}
    for k = 1, math.min(6, #names) do
      top[k] = names[k][1] .. " " .. names[k][2]
    end
    print()
    print(string.format("IDLE  %d s, poll interval %g s (the default), %d "
      .. "threads: %d syscalls (%.1f/s), %d takes, %.1f ms CPU",
      i.seconds, i.poll_interval_s, i.threads, i.syscalls,
      i.syscalls / i.seconds, i.takes, i.cpu_ms))
    print("  strace -c -f: " .. (#top > 0 and table.concat(top, ", ")
      or "none"))
  end

  if r.standin then
    local s = r.standin
    print()
    print(string.format("STAND-IN  %s, requests/s", s.wrk))
    print(string.format("  %-30s %10d", "POST take, empty queue (204)",
      s.take_empty_requests_per_s))
    print(string.format("  %-30s %10d", "GET /v1", s.discovery_requests_per_s))
    print(string.format("  an action costs it 2 requests (take + result): "
      .. "about %d actions/s at most", s.actions_per_s_ceiling))
    print(string.format("  CPU per take request: wrk %.1f us, the stand-in "
      .. "%.1f us", s.wrk_cpu_us_per_request, s.api_cpu_us_per_request))
  end

  if r.floor then
    local f = r.floor
    print()
    print("FLOORS  what the libraries and this machine cost any host "
      .. "(bench/floor.c)")
    print(string.format("  %-62s %7.0f kB", "RssAnon of a process that only "
      .. "loads and sets up the libraries", f.libraries_rssanon_kb))
    local w4 = r.throughput and r.throughput.echo_w4
    if w4 then
      print(string.format("  %-62s %7.0f kB", "  so flyte-host's own, idle, 4 "
        .. "workers", w4.memory_idle.rssanon_kb - f.libraries_rssanon_kb))
      print(string.format("  %-62s %7.0f kB", "  so flyte-host's own, after "
        .. w4.actions .. " actions, 4 workers",
        w4.memory_end.rssanon_kb - f.libraries_rssanon_kb))
    end
    print(string.format("  client CPU per request to the stand-in (an empty "
      .. "take: 204; %d requests):", f.requests))
    print(string.format("  %-62s %7.1f us", "  through the host's own client "
      .. "(host/http.c, libcurl)", f.libcurl_us_per_request))
    print(string.format("  %-62s %7.1f us", "  over a bare socket (one send, "
      .. "one recv)", f.socket_us_per_request))
    print(string.format("  %-62s %7.1f ms", "  so an action's two requests "
      .. "through libcurl, per 1,000", f.libcurl_us_per_request * 2))
    local t = r.throughput or {}
    for _, k in ipairs { { "echo_w1", "1 worker" }, { "echo_w4", "4 workers" } } do
      local row = t[k[1]]
      if row and row.own_cpu_ms_per_1k then
        print(string.format("  %-62s %7.1f ms", "  flyte-host's own per 1,000, "
          .. "above that (at most), " .. k[2], row.own_cpu_ms_per_1k))
        print(string.format("    (%.1f ms in all, the libcurl floor %.1f ms "
          .. "measured right after each run)", row.cpu_ms_per_1k,
          row.floor_ms_per_1k))
      end
    end
  end

  if r.json then
    local j = r.json
    print()
    print(string.format("JSON  MB/s; payloads of %d and %d bytes (flyte.json "
      .. "text)", j.sizes_bytes["2k"], j.sizes_bytes["1m"]))
    print(string.format("  %-30s %10s %10s %10s %10s", "", "enc 2 KB",
      "dec 2 KB", "enc 1 MB", "dec 1 MB"))
    for _, name in ipairs { "flyte", "cjson" } do
      local c = j[name]
      print(string.format("  %-30s %10.1f %10.1f %10.1f %10.1f",
        name == "flyte" and "flyte.json" or "cjson (lua-cjson)",
        c.encode_2k_mb_s, c.decode_2k_mb_s, c.encode_1m_mb_s, c.decode_1m_mb_s))
    end
    print("  (flyte.json sorts keys, checks UTF-8 and writes shortest "
      .. "round-trip numbers; cjson does none of these)")
  end

  if r.errors then
    print()
    for _, e in ipairs(r.errors) do print("ERROR in " .. e) end
  end
end

--- Main -----------------------------------------------------------------------

local SECTIONS = {
  { "waits", bench_waits },
  { "throughput", bench_throughput },
  { "latency", bench_latency },
  { "long", bench_long },
  { "startup", bench_startup },
  { "idle", bench_idle },
  { "standin", bench_standin },
  { "floor", bench_floor },
  { "json", bench_json },
}

local function main()
  local only = os.getenv("BENCH_ONLY")
  local wanted = {}
  for name in (only or ""):gmatch("[^,%s]+") do wanted[name] = true end
  local f = io.open(BINARY, "rb")
  if not f then
    io.stderr:write("bench: no " .. BINARY .. " (run `make bench`)\n")
    os.exit(2)
  end
  f:close()
  local report = { machine = machine(), runs = RUNS }
  local started = core.monotime()
  for _, section in ipairs(SECTIONS) do
    local name, fn = section[1], section[2]
    if not only or wanted[name] then
      io.stderr:write("bench: " .. name .. "\n")
      local t0 = core.monotime()
      local ok, err = pcall(fn, report)
      if not ok then
        -- Ctrl-C: stop here (the section has stopped its processes)
        if tostring(err):match("interrupted!") then error(err, 0) end
        report.errors = report.errors or {}
        report.errors[#report.errors + 1] = name .. ": " .. tostring(err)
      end
      io.stderr:write(string.format("bench: %s took %.1f s\n", name,
        core.monotime() - t0))
    end
  end
  report.seconds = round(core.monotime() - started, 1)
  print_report(report)
  local out = assert(io.open(OUT, "w"))
  out:write(flyte.json.encode(report, { pretty = true }), "\n")
  out:close()
  print()
  print(string.format("%.0f s in all; figures in %s", report.seconds, OUT))
  if report.errors then os.exit(1) end
end

main()
