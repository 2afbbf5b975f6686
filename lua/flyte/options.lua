--- Checks shared by the functions of the flyte module that take a table of
-- options (flyte.http.request, flyte.exec). Each returns what is wrong, or
-- nil; the caller raises it at its own caller's line.

local M = {}

--- opts must be a table whose keys are all in `known` (a set).
function M.unknown(opts, known)
  if type(opts) ~= "table" then
    return "expected a table of options, got " .. type(opts)
  end
  for k in pairs(opts) do
    if not known[k] then
      local names = {}
      for name in pairs(known) do names[#names + 1] = name end
      table.sort(names)
      return "unknown option '" .. tostring(k) .. "' (options: "
        .. table.concat(names, ", ") .. ")"
    end
  end
end

--- A timeout, when given, must be a positive, finite number of seconds.
function M.timeout(v)
  if v ~= nil and (type(v) ~= "number" or v ~= v or v <= 0
      or v == math.huge) then
    return "timeout must be a positive number of seconds, got " .. tostring(v)
  end
end

return M
