#!lua name=hotparams
--[[
hotparams: the one write path of a parameter store.

This file opens the library; hotparams/library.py appends state.lua,
variants.lua, checks.lua, write.lua, writes.lua, reads.lua and fleet.lua (one
FUNCTION LOAD, one chunk: later files use the local helpers of earlier ones).

Every writer (the Python API, the CLI, the web admin, a person at
redis-cli) goes through these functions, so every change is checked,
versioned, audited and published atomically.  Redis does not roll a
function back when it fails half-way, so every function does ALL of its
checks before its first write.

Calling convention (all functions)
  KEYS[1]  the namespace name, e.g. "chat".  Every key the function touches
           is "hp:{<namespace>}:...", which hashes to the same cluster slot
           as the bare name, so KEYS[1] routes the call to the right node.
  ARGV     field/value pairs, then options written as "@name value" pairs
           (field names are identifiers, so "@" can never start one).
           Every write takes "@rid <request id>" (1-64 of [A-Za-z0-9_-]):
           a write whose id already committed a version answers that
           version and writes nothing (a client's retry after a lost reply).

Keys of a namespace (see the README's "Implementation" section)
  hp:{ns}:meta      hash   version, epoch, ts, schema_rev, oldest, created,
                           retention, audit_maxlen, max_value_bytes
  hp:{ns}:v:<n>     hash   the complete values of version n (field -> JSON
                           text) plus "@ts" (commit ms), "@schema" (rev) and,
                           with A/B variants, "@variants" (JSON)
  hp:{ns}:schema    hash   schema revision -> validation rules (JSON)
  hp:{ns}:audit     stream one entry per change
  hp:{ns}:rids      hash   request id -> the version that request committed
  hp:{ns}:rids:at   zset   request id -> when (ms); both trimmed on write
  hp:{ns}:events    channel one message per change

Errors are error replies whose first word is a stable code:
  HP_BADARG   malformed call (namespace name, option, argument count)
  HP_NONS     the namespace does not exist
  HP_NOVERSION the version asked for is not retained
  HP_CONFLICT <expected> <actual>   failed compare-and-set
  HP_STALE <actual>                 internal: the caller validated against
                                    an older version and must retry
  HP_INVALID <field>: <reason>[; <field>: <reason>]...
]]

-- replaced at load time by who this library is, as JSON {release, api,
-- api_min, digest}; hp_libversion answers it (hotparams/library.py)
local LIBVERSION = 'dev'
local MASK = '******'
local MAX_NAMESPACE = 64
local DEFAULT_RETENTION = 100
local DEFAULT_AUDIT_MAXLEN = 10000
local DEFAULT_MAX_VALUE_BYTES = 65536
local MAX_SAFE_INT = 9007199254740992 -- 2^53: exact in every JSON reader
-- request ids of committed writes (exactly-once retries): how many, how long
local REQUEST_IDS_KEPT = 10000
local REQUEST_IDS_TTL_MS = 600000

-- ------------------------------------------------------------------ keys

local function check_namespace(ns)
  if type(ns) ~= 'string' or #ns == 0 or #ns > MAX_NAMESPACE
      or not ns:match('^[%w][%w_%.%-]*$') then
    return redis.error_reply('HP_BADARG namespace: must be 1-64 characters of '
      .. 'letters, digits, "_", "." or "-", starting with a letter or digit')
  end
  return nil
end

local function key_of(ns, suffix)
  return 'hp:{' .. ns .. '}:' .. suffix
end

-- ------------------------------------------------------------------ strict JSON

local function is_json_number(tok)
  if tok:match('^%-?0%d') then return false end
  return tok:match('^%-?%d+$') ~= nil
    or tok:match('^%-?%d+%.%d+$') ~= nil
    or tok:match('^%-?%d+[eE][%+%-]?%d+$') ~= nil
    or tok:match('^%-?%d+%.%d+[eE][%+%-]?%d+$') ~= nil
end

-- Replace every string literal by "" so the bare tokens can be checked.
-- Returns nil on a malformed string: unterminated, a raw control character,
-- a bad escape, or a lone UTF-16 surrogate (which no JSON decoder accepts).
local function strip_strings(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local q = s:find('"', i, true)
    if not q then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, q - 1)
    local j = q + 1
    local high = false -- a high surrogate waits for its low half
    while true do
      local c = s:find('[%z\1-\31"\\]', j)
      if not c or (high and c ~= j) then return nil end
      local ch = s:sub(c, c)
      if ch == '"' then
        if high then return nil end
        j = c + 1
        break
      elseif ch ~= '\\' then
        return nil
      end
      local e = s:sub(c + 1, c + 1)
      if e == 'u' then
        local hex = s:sub(c + 2, c + 5)
        if not hex:match('^%x%x%x%x$') then return nil end
        local code = tonumber(hex, 16)
        if code >= 0xD800 and code <= 0xDBFF then
          if high then return nil end
          high = true
        elseif code >= 0xDC00 and code <= 0xDFFF then
          if not high then return nil end
          high = false
        elseif high then
          return nil
        end
        j = c + 6
      elseif e ~= '' and ('"\\/bfnrt'):find(e, 1, true) then
        if high then return nil end
        j = c + 2
      else
        return nil
      end
    end
    out[#out + 1] = '""'
    i = j
  end
  return table.concat(out)
end

-- cjson accepts NaN, Infinity and hex numbers; JSON (and every worker) does not.
local function is_strict_json(s)
  local bare = strip_strings(s)
  if not bare then return false end
  for tok in bare:gmatch('[^%s%[%]{},:"]+') do
    if tok ~= 'true' and tok ~= 'false' and tok ~= 'null' and not is_json_number(tok) then
      return false
    end
  end
  return true
end

local function all_finite(v)
  local t = type(v)
  if t == 'number' then
    return v == v and v ~= math.huge and v ~= -math.huge
  elseif t == 'table' then
    for _, item in pairs(v) do
      if not all_finite(item) then return false end
    end
  end
  return true
end

local function valid_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local extra
    if c < 0x80 then extra = 0
    elseif c >= 0xC2 and c <= 0xDF then extra = 1
    elseif c >= 0xE0 and c <= 0xEF then extra = 2
    elseif c >= 0xF0 and c <= 0xF4 then extra = 3
    else return false end
    for k = 1, extra do
      local b = s:byte(i + k)
      if not b or b < 0x80 or b > 0xBF then return false end
    end
    i = i + extra + 1
  end
  return true
end

local function utf8_len(s)
  local _, count = s:gsub('[^\128-\191]', '')
  return count
end

-- ------------------------------------------------------------------ validation

-- The JSON type of a decoded value ("integer" also counts as "number").
local function json_type(raw, v)
  if v == cjson.null then return 'null' end
  local t = type(v)
  if t == 'boolean' then return 'boolean' end
  if t == 'string' then return 'string' end
  if t == 'number' then
    if raw:match('^%s*%-?%d+%s*$') then return 'integer' end
    if v == math.floor(v) and not raw:find('[eE]') then return 'integer' end
    return 'number'
  end
  if t == 'table' then
    if raw:match('^%s*%[') then return 'array' end
    return 'object'
  end
  return 'unknown'
end

local function type_allowed(types, jt, v)
  for _, allowed in ipairs(types) do
    if allowed == 'any' or allowed == jt then return true end
    if allowed == 'number' and jt == 'integer' then return true end
    if allowed == 'integer' and jt == 'number' and v == math.floor(v) then return true end
  end
  return false
end

local function show(v, secret)
  if secret then return MASK end
  if type(v) == 'number' then return tostring(v) end
  return nil
end

local function clause(prefix, v, secret)
  local shown = show(v, secret)
  if shown then return prefix .. ' (got ' .. shown .. ')' end
  return prefix
end

-- Check one value against one field rule; returns nil or a reason.
local function check_value(rule, raw, max_bytes)
  if #raw > max_bytes then
    return 'value is ' .. #raw .. ' bytes, more than the limit of ' .. max_bytes
  end
  if not is_strict_json(raw) then return 'not valid JSON' end
  local ok, v = pcall(cjson.decode, raw)
  if not ok then return 'not valid JSON' end
  if not all_finite(v) then return 'numbers must be finite' end
  local jt = json_type(raw, v)
  local types = rule.types or { 'any' }
  if not type_allowed(types, jt, v) then
    return 'expected ' .. table.concat(types, ' or ') .. ', got ' .. jt
  end
  if jt == 'null' then return nil end
  local secret = rule.secret
  if rule.enum then
    local found = false
    for _, e in ipairs(rule.enum) do
      if e == v then found = true break end
    end
    if not found then
      local names = {}
      for _, e in ipairs(rule.enum) do names[#names + 1] = cjson.encode(e) end
      return 'must be one of ' .. table.concat(names, ', ')
    end
  end
  if jt == 'number' or jt == 'integer' then
    if (jt == 'integer' or not type_allowed(types, 'number', 0.5)) and math.abs(v) > MAX_SAFE_INT then
      return 'integers must be between -2^53 and 2^53'
    end
    if rule.min ~= nil and v < rule.min then return clause('must be >= ' .. rule.min, v, secret) end
    if rule.max ~= nil and v > rule.max then return clause('must be <= ' .. rule.max, v, secret) end
    if rule.xmin ~= nil and v <= rule.xmin then return clause('must be > ' .. rule.xmin, v, secret) end
    if rule.xmax ~= nil and v >= rule.xmax then return clause('must be < ' .. rule.xmax, v, secret) end
    if rule.multiple ~= nil and rule.multiple > 0 then
      local q = v / rule.multiple
      if math.abs(q - math.floor(q + 0.5)) > 1e-9 then
        return clause('must be a multiple of ' .. rule.multiple, v, secret)
      end
    end
  elseif jt == 'string' then
    if not valid_utf8(v) then return 'not valid UTF-8' end
    local len = utf8_len(v)
    if rule.minlen ~= nil and len < rule.minlen then
      return 'must be at least ' .. rule.minlen .. ' characters (got ' .. len .. ')'
    end
    if rule.maxlen ~= nil and len > rule.maxlen then
      return 'must be at most ' .. rule.maxlen .. ' characters (got ' .. len .. ')'
    end
  elseif jt == 'array' then
    local count = #v
    if rule.minitems ~= nil and count < rule.minitems then
      return 'must have at least ' .. rule.minitems .. ' items (got ' .. count .. ')'
    end
    if rule.maxitems ~= nil and count > rule.maxitems then
      return 'must have at most ' .. rule.maxitems .. ' items (got ' .. count .. ')'
    end
    if rule.items then
      for i, item in ipairs(v) do
        local it = json_type(cjson.encode(item), item)
        if not type_allowed(rule.items, it, item) then
          return 'item ' .. i .. ' must be ' .. table.concat(rule.items, ' or ') .. ', got ' .. it
        end
      end
    end
  end
  return nil
end

local function invalid(problems)
  local parts = {}
  for _, p in ipairs(problems) do parts[#parts + 1] = p[1] .. ': ' .. p[2] end
  return redis.error_reply('HP_INVALID ' .. table.concat(parts, '; '))
end
