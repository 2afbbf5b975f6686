-- Operating a pack: /metrics, /ready, /live, /details and JSON logs.
local testing = require "flyte.testing"
local flyte = require "flyte"

-- Parses the Prometheus text format 0.0.4: returns samples by series
-- name with labels, and the TYPE of each metric family; raises on any line
-- that is not a comment, a blank or a sample.
local function parse_metrics(text)
  local samples, types, helps = {}, {}, {}
  for line in text:gmatch("[^\n]+") do
    local name, kind = line:match("^# TYPE ([%w_:]+) (%a+)$")
    local help = line:match("^# HELP ([%w_:]+) .+$")
    if name then
      types[name] = kind
    elseif help then
      helps[help] = true
    else
      local series, value = line:match("^([%w_:]+%b{}) (%S+)$")
      if not series then series, value = line:match("^([%w_:]+) (%S+)$") end
      assert(series, "not a sample line: " .. line)
      local number = tonumber(value) or (value == "+Inf" and math.huge)
      assert(number, "not a number in: " .. line)
      samples[series] = number
    end
  end
  return samples, types, helps
end

describe("operating a pack", function()
  local api, host

  lazy_setup(function()
    api = testing.api()
    host = testing.host("spec/fixtures/host/cases.lua", api,
      { FLYTE_LOG_FORMAT = "json", FLYTE_WORKERS = 2 })
    api:wait_registration()
  end)

  lazy_teardown(function()
    host:stop()
    api:stop()
  end)

  local function scrape()
    local status, body = testing.get(host.health_url .. "metrics")
    assert.equal(200, status)
    return parse_metrics(body)
  end

  it("serves /metrics in the Prometheus text format with HELP and TYPE lines", function()
    local _, types, helps = scrape()
    for _, family in ipairs { "flyte_actions_taken_total", "flyte_actions_completed_total",
        "flyte_handler_duration_seconds", "flyte_api_requests_total",
        "flyte_api_request_duration_seconds", "flyte_events_sent_total",
        "flyte_events_failed_total", "flyte_event_queue_depth",
        "flyte_event_queue_oldest_seconds", "flyte_workers", "flyte_workers_busy",
        "flyte_actions_held", "flyte_concurrency", "flyte_loop_lag_seconds",
        "flyte_outbox_records_total", "flyte_outbox_syncs_total",
        "flyte_outbox_segments", "flyte_outbox_lost_takes_total",
        "flyte_outbox_write_errors_total",
        "flyte_reloads_total", "flyte_registrations_total", "process_start_time_seconds",
        "flyte_build_info" } do
      assert.truthy(types[family], "no TYPE for " .. family)
      assert.truthy(helps[family], "no HELP for " .. family)
    end
    assert.equal("histogram", types.flyte_handler_duration_seconds)
    -- the pool starts once the pack is registered: wait for it
    local samples = testing.wait(function()
      local now = scrape()
      return now.flyte_workers == 2 and now
    end, 10, "2 workers in /metrics")
    assert.equal(1, samples.flyte_registrations_total)
    assert.equal(1, samples['flyte_build_info{version="0.1.0",lua="Lua 5.4.4"}'])
  end)

  it("moves the counters as actions complete", function()
    local before = scrape()
    api:wait_result(api:enqueue("echo", 1))
    api:wait_result(api:enqueue("boom"))
    local after = scrape()
    local function delta(series) return (after[series] or 0) - (before[series] or 0) end
    assert.equal(2, delta("flyte_actions_taken_total"))
    assert.equal(1, delta('flyte_actions_completed_total{command="echo",outcome="success"}'))
    assert.equal(1, delta('flyte_actions_completed_total{command="boom",outcome="fatal"}'))
    assert.equal(1, delta('flyte_handler_duration_seconds_count{command="echo"}'))
    assert.equal(1, delta('flyte_handler_duration_seconds_bucket{command="echo",le="+Inf"}'))
    assert.is_true(delta('flyte_api_requests_total{endpoint="take",status="2xx"}') >= 2)
    assert.equal(2, delta('flyte_api_requests_total{endpoint="result",status="2xx"}'))
    assert.equal(2, delta('flyte_api_request_duration_seconds_count{endpoint="result"}'))
  end)

  it("counts events sent", function()
    local before = scrape()
    api:wait_result(api:enqueue("send", 2))
    api:wait_events(1)
    testing.wait(function()
      return scrape().flyte_events_sent_total == (before.flyte_events_sent_total or 0) + 1
    end, 5, "the event to be counted")
  end)

  it("is ready once registered, and live", function()
    local status, body = testing.get(host.health_url .. "ready")
    assert.same({ 200, true }, { status, flyte.json.decode(body).ready })
    status, body = testing.get(host.health_url .. "live")
    assert.same({ 200, { live = true } }, { status, flyte.json.decode(body) })
  end)

  it("gives details an operator asks about first", function()
    local status, body = testing.get(host.health_url .. "details")
    assert.equal(200, status)
    local d = flyte.json.decode(body)
    assert.is_true(d.registered)
    assert.matches("^%d%d%d%d%-", d.last_poll)
    assert.equal("none", d.last_reload.outcome)
    assert.equal(0, d.in_flight.echo)
  end)

  it("logs one JSON object a line, with the action's id from take to result", function()
    local id = api:enqueue("echo", "logged")
    api:wait_result(id)
    local line = host:wait_log('({[^\n]*"msg":"action ' .. id .. ': echo %-> Echoed[^\n]*})')
    local entry = flyte.json.decode(line)
    assert.same({ "info", tostring(id), "echo", "Echoed", "success" },
      { entry.level, entry.action, entry.command, entry.event, entry.outcome })
    assert.equal("number", type(entry.duration_ms))
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", entry.time)
    for l in host:log():gmatch("[^\n]+") do
      assert.truthy(flyte.json.decode(l), "not a JSON line: " .. l)
    end
  end)

  it("puts the action's id on pack code's log lines", function()
    local id = api:enqueue("boom")
    api:wait_result(id)
    local line = host:wait_log('({[^\n]*"msg":"command \'boom\' raised an error"[^\n]*"action":"'
      .. id .. '"[^\n]*})')
    assert.equal("boom", flyte.json.decode(line).command)
  end)
end)

describe("readiness", function()
  it("is 503 before the pack is registered", function()
    local port = require("flyte.core").free_port()
    local host = testing.host("packs/jira.lua", "http://127.0.0.1:" .. port)
    testing.wait(function()
      local ok, status = pcall(testing.get, host.health_url .. "ready")
      return ok and status == 503
    end, 5, "/ready to answer 503")
    local _, body = testing.get(host.health_url .. "ready")
    assert.same({ ready = false, reason = "not registered yet" }, flyte.json.decode(body))
    host:stop()
  end)
end)
