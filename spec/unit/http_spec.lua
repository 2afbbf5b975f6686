-- flyte.http.request against servers on 127.0.0.1: the stand-in flyte-api
-- (flyte-host standin) and testing.http_stub (flyte-host stub), which echoes what it
-- receives.
local flyte = require "flyte"
local core = require "flyte.core"
local testing = require "flyte.testing"

local request = flyte.http.request

describe("flyte.http.request", function()
  local api, echo

  setup(function()
    api = testing.api()
    echo = testing.http_stub {
      ["GET /tagged"] = { status = 200, body = "tagged",
        headers = { ["X-Request-Id"] = "abc-123" } },
    }
  end)

  teardown(function()
    if echo then echo:stop() end
    if api then api:stop() end
  end)

  -- What the echo stub received, decoded from its answer.
  local function echoed(opts)
    opts.url = opts.url or echo.url .. "/echo"
    local res = assert(request(opts))
    assert.equal(200, res.status)
    return assert(flyte.json.decode(res.body))
  end

  describe("a response", function()
    it("has the status, the headers and the body of a GET", function()
      local res = assert(request { url = api.url .. "/dev/stats" })
      assert.equal(200, res.status)
      assert.equal("application/json", res.headers["content-type"])
      assert.equal("integer", math.type(flyte.json.decode(res.body).events))
    end)

    it("has exactly the fields status, headers and body", function()
      local res = assert(request { url = api.url .. "/dev/stats" })
      local keys = {}
      for k in pairs(res) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.same({ "body", "headers", "status" }, keys)
    end)

    it("has its header names lower-cased", function()
      local res = assert(request { url = echo.url .. "/tagged" })
      assert.equal("abc-123", res.headers["x-request-id"])
      assert.is_nil(res.headers["X-Request-Id"])
    end)

    it("is returned for an error status too, not turned into a failure", function()
      local res = assert(request { url = api.url .. "/no/such/path" })
      assert.equal(404, res.status)
      assert.equal("no such path", flyte.json.decode(res.body).error)
    end)
  end)

  describe("a body", function()
    it("given as a table is sent as JSON with Content-Type application/json", function()
      local got = echoed { method = "POST", body = { project = "FOO", n = 5 } }
      assert.equal("application/json", got.headers["content-type"])
      assert.same({ project = "FOO", n = 5 }, flyte.json.decode(got.body))
    end)

    it("given as a table arrives at the stand-in exactly as it was", function()
      local registration = testing.load("packs/jira.lua"):registration()
      local res = assert(request { method = "POST", url = api.url .. "/v1/packs",
        body = registration })
      assert.equal(201, res.status)
      assert.same(registration, api:state().packs[1].registration)
    end)

    it("given as a table keeps a Content-Type set in headers", function()
      local got = echoed { method = "POST", body = { a = 1 },
        headers = { ["Content-Type"] = "application/vnd.api+json" } }
      assert.equal("application/vnd.api+json", got.headers["content-type"])
    end)

    it("given as a string is sent as it is", function()
      local got = echoed { method = "PUT", body = "a=1&b=2",
        headers = { ["Content-Type"] = "text/plain" } }
      assert.equal("PUT", got.method)
      assert.equal("a=1&b=2", got.body)
      assert.equal("text/plain", got.headers["content-type"])
    end)
  end)

  describe("a query", function()
    it("is appended to the URL with its values escaped", function()
      local got = echoed { query = { q = "a b&c/é", n = 5 } }
      assert.equal("n=5&q=a%20b%26c%2F%C3%A9", got.query)
    end)

    it("is appended after a query already in the URL", function()
      local got = echoed { url = echo.url .. "/echo?x=1", query = { y = 2 } }
      assert.equal("x=1&y=2", got.query)
    end)

    it("repeats a name for each value of a list", function()
      local got = echoed { query = { tag = { "a", "b" } } }
      assert.equal("tag=a&tag=b", got.query)
    end)
  end)

  describe("headers", function()
    it("are sent as given", function()
      local got = echoed { headers = { ["X-Trace-Id"] = "t-1", ["X-Count"] = 3 } }
      assert.equal("t-1", got.headers["x-trace-id"])
      assert.equal("3", got.headers["x-count"])
    end)

    it("include an Authorization header as the stand-in records it", function()
      local res = assert(request { url = api.url .. "/health",
        headers = { Authorization = "Basic dXNlcjp0b2tlbg==" } })
      assert.equal(200, res.status)
      assert.equal("Basic dXNlcjp0b2tlbg==", api:state().authorization)
    end)

    it("send a header given as an empty string, empty", function()
      local got = echoed { headers = { ["X-Empty"] = "" } }
      assert.equal("", got.headers["x-empty"])
    end)
  end)

  describe("the method", function()
    it("is GET when none is given", function()
      assert.equal("GET", echoed({}).method)
    end)

    it("is sent upper-cased", function()
      assert.equal("DELETE", echoed({ method = "delete" }).method)
    end)
  end)

  describe("a failure to get a response", function()
    it("returns nil and a message when the connection is refused", function()
      local port = assert(core.free_port())
      local res, err = request { url = "http://127.0.0.1:" .. port .. "/" }
      assert.is_nil(res)
      assert.equal("GET http://127.0.0.1:" .. port .. "/: Couldn't connect to server", err)
    end)

    it("returns nil and a message when no answer comes within the timeout", function()
      api:fault { route = "health", delay = 10 }
      finally(function() api:clear_faults() end)
      local started = core.monotime()
      local res, err = request { url = api.url .. "/health", timeout = 0.2 }
      assert.is_nil(res)
      assert.matches("^GET http://127%.0%.0%.1:%d+/health: Timeout was reached", err)
      assert.is_true(core.monotime() - started < 2)
    end)

    it("returns nil and a message for https to a closed port", function()
      local port = assert(core.free_port())
      local res, err = request { url = "https://127.0.0.1:" .. port .. "/" }
      assert.is_nil(res)
      assert.equal("GET https://127.0.0.1:" .. port .. "/: Couldn't connect to server", err)
    end)

    it("returns nil and a TLS error for https to a server that speaks plain HTTP", function()
      local res, err = request { url = api.url:gsub("^http:", "https:") .. "/health",
        timeout = 5 }
      assert.is_nil(res)
      assert.matches("^GET https://127%.0%.0%.1:%d+/health: SSL", err)
    end)

    it("keeps a password given in the URL out of the message", function()
      local port = assert(core.free_port())
      local _, err = request { url = "http://user:s3cret@127.0.0.1:" .. port .. "/" }
      assert.equal("GET http://127.0.0.1:" .. port .. "/: Couldn't connect to server", err)
    end)
  end)

  describe("a mistake in the options", function()
    -- The message without its position ("file:line: ").
    local function raised(opts)
      local ok, err = pcall(request, opts)
      assert.is_false(ok)
      return (err:gsub("^[^:]+:%d+: ", ""))
    end

    it("raises pointing at the caller's line", function()
      local line
      local ok, err = pcall(function()
        line = debug.getinfo(1, "l").currentline + 1
        request { url = "http://x", timeout = "soon" }
      end)
      assert.is_false(ok)
      assert.matches("^spec/unit/http_spec%.lua:" .. line .. ": flyte%.http%.request: ", err)
    end)

    local cases = {
      { "raises when the options are not a table", "http://example.com",
        "expected a table of options, got string" },
      { "raises naming an unknown option", { url = "http://x", params = {} },
        "unknown option 'params' (options: body, headers, method, query, timeout, url)" },
      { "raises when the url is missing", {},
        "url must be a string, got nil" },
      { "raises for a method that is not a name", { url = "http://x", method = 5 },
        'method must be a name such as "GET" or "POST", got number' },
      { "raises for a query that is not a table", { url = "http://x", query = "a=1" },
        "query must be a table, got string" },
      { "raises naming a query value that cannot be sent", { url = "http://x",
        query = { filter = { a = 1 } } },
        "query.filter must be a string, a number, a boolean or a list of them, got table" },
      { "raises for headers that are not a table", { url = "http://x", headers = "X: 1" },
        "headers must be a table, got string" },
      { "raises naming a header whose value is not a string", { url = "http://x",
        headers = { Accept = { "a" } } },
        "headers.Accept must be a string or a number, got table" },
      { "raises naming a header value with a line break", { url = "http://x",
        headers = { ["X-A"] = "1\r\nX-B: 2" } },
        "headers.X-A must not contain a line break" },
      { "raises for a header name that is not a token", { url = "http://x",
        headers = { ["X A:"] = "1" } },
        'header names must be strings of letters, digits and -, got "X A:"' },
      { "raises for a body that is neither a string nor a table", { url = "http://x",
        method = "POST", body = 42 },
        "body must be a string or a table, got number" },
      { "raises for a table body with no JSON form", { url = "http://x",
        method = "POST", body = { f = print } },
        "body cannot be encoded as JSON: f: cannot encode a function" },
      { "raises for a GET with a body", { url = "http://x", body = "x" },
        "a GET request cannot have a body" },
      { "raises for a timeout that is not positive", { url = "http://x", timeout = 0 },
        "timeout must be a positive number of seconds, got 0" },
      { "raises for a timeout that is not a number", { url = "http://x", timeout = "5" },
        "timeout must be a positive number of seconds, got 5" },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        assert.equal("flyte.http.request: " .. case[3], raised(case[2]))
      end)
    end

    -- a URL is data (often from an action's input): a bad one is the
    -- handler's failure to report, as a refused connection is
    for _, case in ipairs {
      { "not http or https", "ftp://example.com",
        'url must be an http:// or https:// URL, got "ftp://example.com"' },
      { "not a URL at all", "example.com/x",
        'url must be an http:// or https:// URL, got "example.com/x"' },
      { "with a space in it", "http://x/a b",
        "url must not contain spaces or control characters (escape them, or "
          .. 'pass them in query), got "http://x/a b"' },
    } do
      it("answers nil and why for a url " .. case[1], function()
        local res, err = request { url = case[2] }
        assert.is_nil(res)
        assert.equal("flyte.http.request: " .. case[3], err)
      end)
    end
    it("answers nil and libcurl's reason for a url it cannot parse", function()
      local res, err = request { url = "http://[::1" }
      assert.is_nil(res)
      assert.matches("URL", err)
    end)
  end)
end)
