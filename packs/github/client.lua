--- A small client of GitHub's REST API for the GitHub pack: requests with
-- GitHub's headers and token, answers decoded, errors in GitHub's words.
-- The pack requires it as "github.client": the pack's directory is on
-- package.path, so this file is found beside packs/github.lua.

local flyte = require "flyte"

local M = {}

local DEFAULT_URL = "https://api.github.com"
local TIMEOUT = 10 -- seconds

local Client = {}
Client.__index = Client

--- A client for `url` (GitHub's API root) with `token` (may be nil).
function M.new(url, token)
  if type(url) ~= "string" or not url:match("^https?://[^/]") then
    return nil, "the GitHub API URL must be an http:// or https:// URL, got '"
      .. tostring(url) .. "'"
  end
  return setmetatable({ url = url:gsub("/+$", ""), token = token }, Client)
end

--- A client from the environment, read now: GITHUB_API_URL (default
-- https://api.github.com) and GITHUB_TOKEN.
function M.from_env()
  local url, token = os.getenv("GITHUB_API_URL"), os.getenv("GITHUB_TOKEN")
  return M.new(url ~= "" and url or DEFAULT_URL, token ~= "" and token or nil)
end

-- GitHub's own words for a failure: {"message": "...", "errors": [...]}.
local function github_error(res)
  local decoded = flyte.json.decode(res.body)
  local text = type(decoded) == "table" and type(decoded.message) == "string"
    and decoded.message or res.body:gsub("%s+", " "):sub(1, 200)
  return "GitHub answered " .. res.status .. ": " .. text
end

--- Sends `method path` with `body` (a table, as JSON, or nil). Returns the
-- decoded answer, or nil and a message (network failure, non-2xx status,
-- an answer that is not JSON).
function Client:request(method, path, body)
  local headers = {
    Accept = "application/vnd.github+json",
    ["X-GitHub-Api-Version"] = "2022-11-28",
    ["User-Agent"] = "flyte-github-pack",
  }
  if self.token then headers.Authorization = "Bearer " .. self.token end
  local res, err = flyte.http.request { method = method,
    url = self.url .. path, headers = headers, body = body, timeout = TIMEOUT }
  if not res then return nil, "cannot reach GitHub: " .. err end
  if res.status < 200 or res.status > 299 then return nil, github_error(res) end
  local decoded, why = flyte.json.decode(res.body)
  if decoded == nil then
    return nil, "GitHub answered " .. res.status .. " with no JSON: " .. why
  end
  return decoded
end

return M
