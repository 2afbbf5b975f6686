--- Starts spec/support/http_stub.lua, a stub HTTP server, for specs of
-- packs that call other services:
--
--   local stub = require "support.stub"
--   local jira = stub.start { ["POST /rest/api/2/issue"] = { status = 201,
--     body = { id = "10000", key = "FOO-1" } } }
--   ... jira.url ...
--   jira:requests()   -- what it received: { method, path, query, headers, body }
--   jira:stop()

local flyte = require "flyte"
local testing = require "flyte.testing"

local M = {}

local Stub = {}
Stub.__index = Stub

--- Starts a stub answering `routes` ("METHOD /path" -> { status, headers,
-- body, delay }) and echoing any other request.
function M.start(routes)
  local process = testing.spawn({ "lua5.4", "spec/support/http_stub.lua",
    flyte.json.encode(routes or {}) })
  local url = process:wait_log("stub on (http://127%.0%.0%.1:%d+)")
  return setmetatable({ url = url, process = process }, Stub)
end

--- The requests it received so far, oldest first.
function Stub:requests()
  local res = assert(flyte.http.request { url = self.url .. "/_stub/requests",
    timeout = 5 })
  return assert(flyte.json.decode(res.body))
end

function Stub:stop()
  return self.process:stop()
end

return M
