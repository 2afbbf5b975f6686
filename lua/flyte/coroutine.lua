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
-- Every coroutine of pack code also carries the host's deadline hook, and
-- closing a coroutine that waits on the host cancels the wait.
--
-- install() changes the global coroutine table of the state, once.

local core = require "flyte.core"

local M = {}

local YIELD = core.YIELD
local arm, cancel_wait, owned = core.arm, core.cancel_wait, core.owned

local REFUSED = "cannot resume or close this coroutine: it belongs to the "
  .. "host (an action's or a task's), or waits on it"
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume,
  coroutine.yield
local co_status, co_close = coroutine.status, coroutine.close
local co_isyieldable = coroutine.isyieldable

-- What co_resume returned; a host wait is passed out and co resumed again.
local function pass(co, ok, first, ...)
  if ok and first == YIELD and co_status(co) == "suspended" then
    if not co_isyieldable() then
      cancel_wait(co)
      error("flyte: a coroutine waited (flyte.http, flyte.sleep, flyte.exec "
        .. "or task:wait) while it was resumed from inside a C function "
        .. "(a table.sort comparator, a string.gsub callback, a "
        .. "metamethod); resume it outside", 0)
    end
    return pass(co, co_resume(co, co_yield(YIELD)))
  end
  return ok, first, ...
end

-- Every coroutine of pack code carries the deadline hook, wherever it was
-- made (one made at a pack's top level inherits none).
function M.create(fn)
  local co = co_create(fn)
  arm(co)
  return co
end

function M.resume(co, ...)
  if type(co) == "thread" then
    if owned(co) then return false, REFUSED end
    arm(co)
  end
  return pass(co, co_resume(co, ...))
end

function M.close(co)
  if type(co) == "thread" then
    if owned(co) then return false, REFUSED end
    cancel_wait(co)
  end
  return co_close(co)
end

local function unwrap(co, ok, ...)
  if ok then return ... end
  local err = ...
  if co_status(co) == "dead" then co_close(co) end
  error(err, 0)
end

function M.wrap(fn)
  local co = M.create(fn)
  return function(...)
    if owned(co) then error(REFUSED, 2) end
    return unwrap(co, pass(co, co_resume(co, ...)))
  end
end

local installed = false

--- Replaces coroutine.resume and coroutine.wrap in this state.
function M.install()
  if installed then return end
  installed = true
  -- the one place that changes a standard library, on purpose
  coroutine.create = M.create -- luacheck: ignore 122
  coroutine.resume = M.resume -- luacheck: ignore 122
  coroutine.wrap = M.wrap -- luacheck: ignore 122
  coroutine.close = M.close -- luacheck: ignore 122
end

return M
