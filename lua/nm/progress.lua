-- nm/progress.lua: a progress bar with rate and ETA on stderr, drawn only
-- when stderr is a terminal (log files and pipes stay clean), and
-- redrawn at most every `interval` seconds so tight loops can call
-- update() every step.
--
--   local bar = progress.new{total = #batches, label = "epoch 3"}
--   for i = 1, #batches do ...; bar:update(i, format("loss %.3f", l)) end
--   bar:finish()

local nm = require "neuromic"

local progress = {}

local Bar = {}
Bar.__index = Bar

local format = string.format

local function clock_text(s)
  if s ~= s or s == math.huge or s < 0 then return "--:--" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return format("%d:%02d:%02d", s // 3600, s % 3600 // 60, s % 60) end
  return format("%d:%02d", s // 60, s % 60)
end
progress.clock_text = clock_text

local function rate_text(r)
  if r >= 100 then return format("%.0f/s", r) end
  if r >= 1 then return format("%.1f/s", r) end
  if r > 0 then return format("%.1fs/it", 1 / r) end
  return "-/s"
end

-- progress.new{total = n, label = "", interval = 0.1 (s), width = (columns),
-- enabled = (stderr is a terminal), stream = io.stderr, unit = ""}
function progress.new(o)
  o = o or {}
  local enabled = o.enabled
  if enabled == nil then enabled = nm.sys.isatty(2) end
  local width = o.width or tonumber(os.getenv("COLUMNS") or "") or 80
  return setmetatable({
    total = o.total, label = o.label or "", interval = o.interval or 0.1,
    width = width, enabled = enabled, stream = o.stream or io.stderr, unit = o.unit or "",
    start = nm.sys.clock(), last_draw = -math.huge, done = 0, drawn = false,
  }, Bar)
end

-- The bar's text for `done` units after `elapsed` seconds.
function Bar:render(done, elapsed, info)
  local rate = elapsed > 0 and done / elapsed or 0
  local head = self.label ~= "" and (self.label .. " ") or ""
  local tail
  if self.total and self.total > 0 then
    local frac = math.min(math.max(done / self.total, 0), 1)
    local eta = rate > 0 and (self.total - done) / rate or math.huge
    tail = format(" %3d%% %d/%d%s %s ETA %s", math.floor(frac * 100), done, self.total, self.unit,
                  rate_text(rate), clock_text(eta))
    if info and info ~= "" then tail = tail .. " " .. info end
    local room = self.width - 1 - #head - #tail - 2
    if room >= 5 then
      local fill = math.floor(frac * room + 1e-9)
      head = head .. "[" .. string.rep("#", fill) .. string.rep(".", room - fill) .. "]"
    end
    return (head .. tail):sub(1, self.width - 1)
  end
  tail = format("%d%s %s %s", done, self.unit, rate_text(rate), clock_text(elapsed))
  if info and info ~= "" then tail = tail .. " " .. info end
  return (head .. tail):sub(1, self.width - 1)
end

-- bar:update(done [, info]): `done` units so far; redraws when due.
function Bar:update(done, info)
  self.done = done
  if not self.enabled then return end
  local now = nm.sys.clock()
  local last = self.total and done >= self.total
  if now - self.last_draw < self.interval and not last then return end
  self.last_draw = now
  self.stream:write("\r", self:render(done, now - self.start, info), "\27[K")
  self.stream:flush()
  self.drawn = true
end

-- bar:step([k [, info]]): k more units (default 1).
function Bar:step(k, info)
  self:update(self.done + (k or 1), info)
end

-- bar:finish([info]): final draw and a newline.
function Bar:finish(info)
  if not self.enabled then return end
  self.last_draw = -math.huge
  self:update(self.done, info)
  self.stream:write("\n")
  self.stream:flush()
end

return progress
