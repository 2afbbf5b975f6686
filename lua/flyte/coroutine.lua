--- Pack code's own coroutines, made able to wait.
--
-- Each action runs in a coroutine of the host's. When a handler waits
-- (flyte.http.request, flyte.sleep, flyte.exec, task:wait) inside a
-- coroutine of its own, say a coroutine.wrap generator, the waiting
-- function yields a sentinel (core.YIELD) rather than to the generator's
-- caller. These replacements of coroutine.resume and coroutine.wrap pass
-- such a yield outward to the host and, once the host resumes the action,
-- resume the inner coroutine, so the wait completes where it was made
-- (cqueues' auxlib.resume does the same). Any other yield is the pack's
-- own and returns to its caller as usual.
--
-- install() changes the global coroutine table of the state, once.

local core = require "flyte.core"

local M = {}

local YIELD = core.YIELD
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume,
  coroutine.yield
local co_status, co_close = coroutine.status, coroutine.close
local co_isyieldable = coroutine.isyieldable

-- What co_resume returned; a host wait is passed out and co resumed again.
local function pass(co, ok, first, ...)
  if ok and first == YIELD and co_status(co) == "suspended" then
    if not co_isyieldable() then
      error("flyte: a coroutine waited (flyte.http, flyte.sleep, flyte.exec "
        .. "or task:wait) while it was resumed from inside a C function "
        .. "(a table.sort comparator, a string.gsub callback, a "
        .. "metamethod); resume it outside", 0)
    end
    return pass(co, co_resume(co, co_yield(YIELD)))
  end
  return ok, first, ...
end

function M.resume(co, ...)
  return pass(co, co_resume(co, ...))
end

local function unwrap(co, ok, ...)
  if ok then return ... end
  local err = ...
  if co_status(co) == "dead" then co_close(co) end
  error(err, 0)
end

function M.wrap(fn)
  local co = co_create(fn)
  return function(...)
    return unwrap(co, pass(co, co_resume(co, ...)))
  end
end

local installed = false

--- Replaces coroutine.resume and coroutine.wrap in this state.
function M.install()
  if installed then return end
  installed = true
  -- the one place that changes a standard library, on purpose
  coroutine.resume = M.resume -- luacheck: ignore 122
  coroutine.wrap = M.wrap -- luacheck: ignore 122
end

return M
