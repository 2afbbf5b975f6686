-- The command line: check, invoke, bad settings, --help, --version.
local testing = require "flyte.testing"
local flyte = require "flyte"

local BIN = testing.binary()

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a command; returns its exit status, stdout and stderr.
local function sh(args, env)
  local out, err = os.tmpname(), os.tmpname()
  local words = { "env" }
  for k, v in pairs(env or {}) do words[#words + 1] = quote(k .. "=" .. v) end
  words[#words + 1] = quote(BIN)
  for _, a in ipairs(args) do words[#words + 1] = quote(a) end
  local _, _, status = os.execute(table.concat(words, " ") .. " >" .. out
    .. " 2>" .. err .. " </dev/null")
  local function slurp(path)
    local f = assert(io.open(path))
    local text = f:read("a")
    f:close()
    os.remove(path)
    return text
  end
  return status, slurp(out), slurp(err)
end

describe("flyte-host check", function()
  it("prints the registration JSON and exits 0", function()
    local status, out = sh({ "check", "packs/jira.lua" }, { FLYTE_LABELS = "env=dev" })
    assert.equal(0, status)
    local reg = flyte.json.decode(out)
    assert.equal("JiraPack", reg.name)
    assert.same({ env = "dev" }, reg.labels)
  end)

  it("exits 1 naming the bad field of a broken pack", function()
    local status, _, err = sh({ "check", "spec/fixtures/host/broken_handler.lua" })
    assert.equal(1, status)
    assert.equal("flyte-host: spec/fixtures/host/broken_handler.lua: "
      .. "pack.commands.go.handler must be a function, got nil\n", err)
  end)

  it("exits 1 with the file and line of a syntax error", function()
    local status, _, err = sh({ "check", "spec/fixtures/host/syntax_error.lua" })
    assert.equal(1, status)
    assert.matches("^flyte%-host: spec/fixtures/host/syntax_error.lua:3: ", err)
  end)
end)

describe("flyte-host invoke", function()
  it("prints the event a command returns and exits 0", function()
    local status, out = sh({ "invoke", "packs/jira.lua", "createIssue",
      '{"project": "FOO"}' })
    assert.equal(0, status)
    assert.same({ event = "IssueCreated", payload = { project = "FOO",
      issueId = "123", location = "http://jira/FOO/123" } }, flyte.json.decode(out))
  end)

  it("prints the FATAL event and exits 1 when the handler fails", function()
    local status, out = sh({ "invoke", "spec/fixtures/host/cases.lua", "boom" })
    assert.equal(1, status)
    assert.equal("FATAL", flyte.json.decode(out).event)
  end)

  it("rejects input that is not JSON with exit status 2", function()
    local status, _, err = sh({ "invoke", "packs/jira.lua", "createIssue", "{nope" })
    assert.equal(2, status)
    assert.matches("^flyte%-host: INPUT_JSON is not valid JSON", err)
  end)
end)

describe("a bad setting", function()
  local cases = {
    { { FLYTE_WORKERS = "many" },
      "flyte-host: FLYTE_WORKERS: 'many' is not a whole number from 1 to 1024\n" },
    { { FLYTE_POLL_INTERVAL = "0.1" },
      "flyte-host: FLYTE_POLL_INTERVAL: 0.1 s is below the minimum of 0.5 s\n" },
    { { FLYTE_LABELS = "env" },
      "flyte-host: FLYTE_LABELS: label 'env' has no '=' (want key=value,key=value)\n" },
    { { FLYTE_API_TIMEOUT = "soon" },
      "flyte-host: FLYTE_API_TIMEOUT: 'soon' is not a positive number of seconds\n" },
    { { FLYTE_HEALTH_PORT = "70000" },
      "flyte-host: FLYTE_HEALTH_PORT: '70000' is not a port number (0 to 65535)\n" },
    { { FLYTE_INSECURE = "maybe" },
      "flyte-host: FLYTE_INSECURE: 'maybe' is not on/off (true, false, 1, 0)\n" },
    { { FLYTE_RELOAD = "sometimes" },
      "flyte-host: FLYTE_RELOAD: 'sometimes' is not on/off (true, false, 1, 0)\n" },
    { { FLYTE_LOG_LEVEL = "loud" },
      "flyte-host: FLYTE_LOG_LEVEL: 'loud' is not one of debug, info, warn, error\n" },
    { { FLYTE_LOG_FORMAT = "xml" },
      "flyte-host: FLYTE_LOG_FORMAT: 'xml' is not text or json\n" },
    { { FLYTE_MEMORY_LIMIT = "lots" },
      "flyte-host: FLYTE_MEMORY_LIMIT: 'lots' is not a size (e.g. 64MB, 512k; 0 for none)\n" },
    { { FLYTE_MEMORY_LIMIT = "10k" },
      "flyte-host: FLYTE_MEMORY_LIMIT: 10k is below the minimum of 1MB\n" },
    { { FLYTE_SHUTDOWN_GRACE = "-1" },
      "flyte-host: FLYTE_SHUTDOWN_GRACE: '-1' is not a number of seconds\n" },
    { { FLYTE_HANDLER_TIMEOUT = "never" },
      "flyte-host: FLYTE_HANDLER_TIMEOUT: 'never' is not a number of seconds (0 for none)\n" },
    { { FLYTE_API = "flyte:8080" },
      "flyte-host: FLYTE_API: 'flyte:8080' is not an http:// or https:// URL\n" },
  }
  for _, case in ipairs(cases) do
    local env, message = case[1], case[2]
    local name = next(env)
    it("stops the host at start with exit 2 when " .. name .. " is " .. env[name],
      function()
        local full = { FLYTE_API = "http://127.0.0.1:9" }
        for k, v in pairs(env) do full[k] = v end
        local status, _, err = sh({ "run", "packs/jira.lua" }, full)
        assert.same({ 2, message }, { status, err })
      end)
  end

  it("given as a flag stops the host the same way", function()
    local status, _, err = sh({ "run", "packs/jira.lua", "--workers", "0" },
      { FLYTE_API = "http://127.0.0.1:9" })
    assert.same({ 2, "flyte-host: --workers: '0' is not a whole number from 1 to 1024\n" },
      { status, err })
  end)

  it("that is an unreadable pack stops the host with exit 2", function()
    local status, _, err = sh({ "run", "no/such/pack.lua" }, { FLYTE_API = "http://127.0.0.1:9" })
    assert.same({ 2, "flyte-host: cannot read pack file 'no/such/pack.lua'\n" },
      { status, err })
  end)

  it("that is a missing FLYTE_API stops the host with exit 2", function()
    local status, _, err = sh({ "run", "packs/jira.lua" })
    assert.equal(2, status)
    assert.matches("^flyte%-host: FLYTE_API is not set", err)
  end)

  -- one rule for every command: 2 is the command line or a setting (a pack
  -- file that cannot be read included), 1 is the pack (it does not load or
  -- check) or the command failing
  it("that is a pack which does not load stops the host with exit 1", function()
    local status, _, err = sh({ "run", "spec/fixtures/host/broken_handler.lua" },
      { FLYTE_API = "http://127.0.0.1:9" })
    assert.equal(1, status)
    assert.matches("pack.commands.go.handler must be a function, got nil", err, 1, true)
  end)
end)

describe("flyte-host", function()
  it("prints its version with the Lua and library versions", function()
    local status, out = sh({ "--version" })
    assert.equal(0, status)
    assert.matches("^flyte%-host %d+%.%d+%.%d+ %(Lua 5%.4%.%d+, libcurl [%d.]+, "
      .. "libmicrohttpd [%d.]+, jansson [%d.]+%)\n$", out)
  end)

  it("prints usage with every setting for --help", function()
    local status, out = sh({ "--help" })
    assert.equal(0, status)
    for _, name in ipairs { "FLYTE_API", "FLYTE_LABELS", "FLYTE_API_TIMEOUT", "FLYTE_JWT",
        "FLYTE_INSECURE", "FLYTE_POLL_INTERVAL", "FLYTE_WORKERS", "FLYTE_HEALTH_PORT",
        "FLYTE_RELOAD", "FLYTE_LOG_LEVEL", "FLYTE_LOG_FORMAT", "FLYTE_HANDLER_TIMEOUT",
        "FLYTE_MEMORY_LIMIT", "FLYTE_SHUTDOWN_GRACE", "FLYTE_OUTBOX" } do
      assert.truthy(out:find(name, 1, true), name)
    end
  end)

  it("rejects an unknown command with exit 2", function()
    local status, _, err = sh({ "frobnicate" })
    assert.same({ 2, "flyte-host: unknown command 'frobnicate' (see flyte-host --help)\n" },
      { status, err })
  end)
end)
