--- The flyte-ticker pack, in Lua: a Tick event with the time in RFC 3339
-- every minute, sent on the pack's own (no commands, so it does not poll).
--
-- TICKER_INTERVAL (seconds, default 60) sets another interval.

local flyte = require "flyte"

local Tick = flyte.event_def { name = "Tick" }

local interval = tonumber(os.getenv("TICKER_INTERVAL") or "60")
if not interval or interval <= 0 then
  error("TICKER_INTERVAL must be a positive number of seconds, got "
    .. tostring(os.getenv("TICKER_INTERVAL")))
end

return flyte.pack {
  name = "Ticker",
  events = { Tick },
  observe = function()
    -- flyte.sleep returns false when the host stops: the loop ends.
    while flyte.sleep(interval) do
      local ok, err = flyte.send_event(Tick { time = flyte.now() })
      if not ok then flyte.log.warn("tick not sent", { error = err }) end
    end
  end,
}
