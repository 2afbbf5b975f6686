--- Settings from the environment, for specs of packs that read them at
-- each call (os.getenv cannot be changed from plain Lua):
--
--   finally(env.set { JIRA_URL = stub.url, JIRA_TOKEN = false })
--
-- makes os.getenv answer the names given (false: unset) until the returned
-- function puts the real os.getenv back; other names are read as before.

local stub = require "luassert.stub"

local M = {}

function M.set(vars)
  local getenv = os.getenv
  local s = stub(os, "getenv", function(name)
    local value = vars[name]
    if value == false then return nil end
    if value ~= nil then return value end
    return getenv(name)
  end)
  return function() s:revert() end
end

return M
