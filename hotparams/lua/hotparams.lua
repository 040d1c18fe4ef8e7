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
  ARGV     field/value pairs, then options written as "@name value" pairs.
           Field names are identifiers (hotparams/schema.py refuses any
           other), so "@" can never start one: every "@name" argument is an
           option, a name that is neither an identifier nor a known option
           is refused, and the Python API refuses such names before sending.
           Text options (@author, @reason, @source) are strict UTF-8 of at
           most 4 KiB.
           Every write takes "@rid <request id>" (1-64 of [A-Za-z0-9_-]):
           a write whose id already committed a version answers that
           version and writes nothing (a client's retry after a lost reply).

Values
  Every value is strict JSON (no NaN, no hex, no lone surrogates) and strict
  UTF-8 at every depth (no encoded surrogates, no overlong forms, nothing
  above U+10FFFF); sizes are checked before any per-byte work.  The rules
  of a schema revision (hp:{ns}:schema, compiled from the model's JSON
  schema by hotparams/schema.py) describe every depth: types, enum, bounds,
  lengths, array items ("item", "prefix"), object properties ("props",
  "req", "extra", "keys") and unions ("anyof").

Raw writers
  What Lua cannot check exactly (a regex pattern, a string format, a field
  validator, a custom type) is marked in the rules: a field rule's "py" (and,
  for a model validator that is not a declared hotparams.Check, the rules'
  top-level "py") says why.  A writer that validated the complete new state
  with the pydantic model says so with "@validated 1" (hp_commit and
  hp_rollback; the Python API sends it only when it holds the model).  Any
  other writer (redis-cli, a Bus without the model, `hotparams set` without
  --schema) is a raw writer and is refused on such fields (or namespaces)
  with HP_INVALID naming what to use instead, unless the namespace was
  registered with allow_raw_writes (rules "allow_raw_writes": true).
  "@validated" is a declaration, not a proof: who may call hp_commit is a
  matter of ACLs (hotparams acl).

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
-- the audit keeps values (and variants documents) up to this size; a larger
-- one is audited as {"$large": {"sha1": ..., "bytes": ...}}: the value itself
-- is in the version hash while it is retained
local AUDIT_INLINE_BYTES = 4096
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

-- The index just after the string literal opening at s[q] (a '"'), or nil
-- when it is malformed: unterminated, a raw control character, a bad
-- escape, or a lone UTF-16 surrogate (which no JSON decoder accepts).
local function string_end(s, q)
  local j = q + 1
  local high = false -- a high surrogate waits for its low half
  while true do
    local c = s:find('[%z\1-\31"\\]', j)
    if not c or (high and c ~= j) then return nil end
    local ch = s:sub(c, c)
    if ch == '"' then
      if high then return nil end
      return c + 1
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
end

-- Replace every string literal by "" so the bare tokens can be checked;
-- nil on a malformed string (see string_end).
local function strip_strings(s)
  local out, i, n = {}, 1, #s
  while i <= n do
    local q = s:find('"', i, true)
    if not q then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, q - 1)
    local j = string_end(s, q)
    if not j then return nil end
    out[#out + 1] = '""'
    i = j
  end
  return table.concat(out)
end

-- The text with every string literal replaced by "" (nil: malformed).  When
-- it holds no backslash and no control byte (a worker's report, most
-- values) no literal has an escape, and pattern work in C pairs the quotes
-- (a third of strip_strings' time); an unterminated literal leaves a lone
-- quote behind.
local function bare_tokens(s)
  if s:find('\\', 1, true) or s:find('%c') then return strip_strings(s) end
  local bare = s:gsub('"[^"]*"', '""')
  if bare:gsub('""', ''):find('"', 1, true) then return nil end
  return bare
end

-- cjson accepts NaN, Infinity and hex numbers; JSON (and every worker) does not.
local function is_strict_json(s)
  local bare = bare_tokens(s)
  if not bare then return false end
  for tok in bare:gmatch('[^%s%[%]{},:"]+') do
    if tok ~= 'true' and tok ~= 'false' and tok ~= 'null' and not is_json_number(tok) then
      return false
    end
  end
  return true
end

-- Strict UTF-8 (RFC 3629): no encoded surrogates (ED A0..BF), no overlong
-- forms (C0, C1, E0 80..9F, F0 80..8F), nothing above U+10FFFF (F4 90.., F5..).
-- Each well-formed sequence becomes "x" (so two neighbours never join into
-- a false sequence); any byte >= 0x80 left over is malformed.  Pattern work
-- runs in C: a 64 KiB value costs well under a millisecond.
local UTF8_SEQUENCES = {
  '[\194-\223][\128-\191]',
  '\224[\160-\191][\128-\191]',
  '[\225-\236\238\239][\128-\191][\128-\191]',
  '\237[\128-\159][\128-\191]',
  '\240[\144-\191][\128-\191][\128-\191]',
  '[\241-\243][\128-\191][\128-\191][\128-\191]',
  '\244[\128-\143][\128-\191][\128-\191]',
}

local function valid_utf8(s)
  if not s:find('[\128-\255]') then return true end
  for _, seq in ipairs(UTF8_SEQUENCES) do s = s:gsub(seq, 'x') end
  return not s:find('[\128-\255]')
end

local function utf8_len(s)
  local _, count = s:gsub('[^\128-\191]', '')
  return count
end

-- ------------------------------------------------------------------ decoding

-- A strict JSON decoder (cjson alone accepts NaN, hex numbers and bad
-- escapes, and decodes [] and {} alike).  Decoded arrays carry the ARRAY
-- metatable so the checks tell them from objects; null is cjson.null.
local ARRAY = {}
local MAX_DEPTH = 64

local function skip_ws(s, i)
  return s:find('[^ \t\r\n]', i) or (#s + 1)
end

local function decode_at(s, i, depth)
  i = skip_ws(s, i)
  local c = s:sub(i, i)
  if c == '"' then
    local j = string_end(s, i)
    if not j then return nil, 'not valid JSON' end
    local literal = s:sub(i, j - 1)
    if not literal:find('\\', 1, true) then return literal:sub(2, -2), j end
    local ok, v = pcall(cjson.decode, literal)
    if not ok or type(v) ~= 'string' then return nil, 'not valid JSON' end
    return v, j
  elseif c == '{' or c == '[' then
    if depth >= MAX_DEPTH then return nil, 'nested deeper than ' .. MAX_DEPTH .. ' levels' end
    local close = c == '{' and '}' or ']'
    local t = {}
    if c == '[' then setmetatable(t, ARRAY) end
    local n = 0
    i = skip_ws(s, i + 1)
    if s:sub(i, i) == close then return t, i + 1 end
    while true do
      local key
      if c == '{' then
        if s:sub(i, i) ~= '"' then return nil, 'not valid JSON' end
        key, i = decode_at(s, i, depth + 1)
        if key == nil then return nil, i end
        i = skip_ws(s, i)
        if s:sub(i, i) ~= ':' then return nil, 'not valid JSON' end
        i = i + 1
      end
      local v
      v, i = decode_at(s, i, depth + 1)
      if v == nil then return nil, i end
      if key ~= nil then t[key] = v else n = n + 1; t[n] = v end
      i = skip_ws(s, i)
      local sep = s:sub(i, i)
      if sep == close then return t, i + 1 end
      if sep ~= ',' then return nil, 'not valid JSON' end
      i = skip_ws(s, i + 1)
    end
  elseif c == 't' and s:sub(i, i + 3) == 'true' then return true, i + 4
  elseif c == 'f' and s:sub(i, i + 4) == 'false' then return false, i + 5
  elseif c == 'n' and s:sub(i, i + 3) == 'null' then return cjson.null, i + 4
  end
  local tok = s:match('^%-?%d+%.?%d*[eE]?[%+%-]?%d*', i)
  if not tok or not is_json_number(tok) then return nil, 'not valid JSON' end
  local v = tonumber(tok)
  if not v or v ~= v or v == math.huge or v == -math.huge then
    return nil, 'numbers must be finite'
  end
  return v, i + #tok
end

-- The decoded value of JSON text `s`, or nil and a reason.
local function decode_json(s)
  local v, i = decode_at(s, 1, 0)
  if v == nil then return nil, i end
  if skip_ws(s, i) <= #s then return nil, 'not valid JSON' end
  return v, nil
end

-- ------------------------------------------------------------------ validation

-- The JSON type of a decoded value; a whole number counts as "integer".
local function kind_of(v)
  if v == cjson.null then return 'null' end
  local t = type(v)
  if t == 'table' then
    if getmetatable(v) == ARRAY then return 'array' end
    return 'object'
  end
  if t == 'number' then
    if v == math.floor(v) then return 'integer' end
    return 'number'
  end
  return t
end

local function type_allowed(types, jt)
  for _, allowed in ipairs(types) do
    if allowed == 'any' or allowed == jt then return true end
    if allowed == 'number' and jt == 'integer' then return true end
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

-- How a key appears in a message: bare when it is a plain name.
local function label(key)
  if type(key) == 'string' and #key <= 64 and key:match('^[%w_%-%.]+$') then return key end
  return cjson.encode(key)
end

local function ordered(t)
  local names = {}
  for name in pairs(t) do names[#names + 1] = name end
  table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
  return names
end

local check_node

local function check_number(rule, types, v, secret)
  local integral_only = true
  for _, t in ipairs(types) do
    if t == 'number' then integral_only = false end
  end
  if integral_only and math.abs(v) > MAX_SAFE_INT then
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
  return nil
end

local function check_array(rule, v, secret)
  local count = #v
  if rule.minitems ~= nil and count < rule.minitems then
    return 'must have at least ' .. rule.minitems .. ' items (got ' .. count .. ')'
  end
  if rule.maxitems ~= nil and count > rule.maxitems then
    return 'must have at most ' .. rule.maxitems .. ' items (got ' .. count .. ')'
  end
  local prefix = rule.prefix or {}
  for i = 1, count do
    local sub = prefix[i] or rule.item
    local reason
    if sub then
      reason = check_node(sub, v[i], secret)
    elseif rule.items then -- rules of older clients: the item types only
      local it = kind_of(v[i])
      if not type_allowed(rule.items, it) then
        reason = 'expected ' .. table.concat(rule.items, ' or ') .. ', got ' .. it
      end
    end
    if reason then return 'item ' .. i .. ': ' .. reason end
  end
  return nil
end

local function check_object(rule, v, secret)
  local count = 0
  for _, key in ipairs(ordered(v)) do
    count = count + 1
    local sub = rule.props and rule.props[key]
    local reason
    if rule.keys then
      reason = check_node(rule.keys, key, secret)
      if reason then return 'key ' .. label(key) .. ': ' .. reason end
    end
    if sub then
      reason = check_node(sub, v[key], secret)
    elseif rule.extra == false then
      reason = 'unexpected field (the model allows no others)'
    elseif type(rule.extra) == 'table' then
      reason = check_node(rule.extra, v[key], secret)
    end
    if reason then return label(key) .. ': ' .. reason end
  end
  for _, name in ipairs(rule.req or {}) do
    if v[name] == nil then return label(name) .. ': required' end
  end
  if rule.minprops ~= nil and count < rule.minprops then
    return 'must have at least ' .. rule.minprops .. ' entries (got ' .. count .. ')'
  end
  if rule.maxprops ~= nil and count > rule.maxprops then
    return 'must have at most ' .. rule.maxprops .. ' entries (got ' .. count .. ')'
  end
  return nil
end

-- Check one decoded value against one rule (at any depth); nil or a reason.
check_node = function(rule, v, secret)
  secret = secret or rule.secret
  if rule.anyof then
    local first
    for _, alt in ipairs(rule.anyof) do
      local reason = check_node(alt, v, secret)
      if not reason then return nil end
      first = first or reason
    end
    return 'matches none of the allowed forms (first: ' .. (first or '?') .. ')'
  end
  local jt = kind_of(v)
  local types = rule.types or { 'any' }
  if not type_allowed(types, jt) then
    return 'expected ' .. table.concat(types, ' or ') .. ', got ' .. jt
  end
  if jt == 'null' then return nil end
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
    return check_number(rule, types, v, secret)
  elseif jt == 'string' then
    local len = utf8_len(v)
    if rule.minlen ~= nil and len < rule.minlen then
      return 'must be at least ' .. rule.minlen .. ' characters (got ' .. len .. ')'
    end
    if rule.maxlen ~= nil and len > rule.maxlen then
      return 'must be at most ' .. rule.maxlen .. ' characters (got ' .. len .. ')'
    end
  elseif jt == 'array' then
    return check_array(rule, v, secret)
  elseif jt == 'object' then
    return check_object(rule, v, secret)
  end
  return nil
end

-- Why a raw writer may not write a field the model checks in Python only.
local function python_only(what, why)
  return what .. ' is checked by Python only (' .. why .. '): write it with the model '
    .. '(a Bus or `hotparams set --schema` with the model), or register the '
    .. 'namespace with allow_raw_writes=True'
end

-- Check one stored value (JSON text) against its field rule; nil or a
-- reason.  Sizes first (cheap), then UTF-8, then the decoded structure.
-- `raw_writer`: the caller did not validate with the model, so fields the
-- rules mark Python-only ("py") are refused.
-- A secret field of a namespace registered with encryption ("sealed")
-- holds a Fernet token made by the client, as a JSON string
-- "hpenc:1:<token>" (hotparams/sealing.py): Redis never sees its value, so
-- only the token's form is checked, and a plaintext value is refused.
local function check_sealed(raw)
  if #raw <= 4096 and raw:match('^"hpenc:1:[%w_%-]+=*"$') then return nil end
  return 'must be encrypted (this namespace stores its secrets encrypted: '
    .. 'the writer needs the keys, HOTPARAMS_SECRET_KEYS)'
end

local function check_value(rule, raw, max_bytes, raw_writer)
  if #raw > max_bytes then
    return 'value is ' .. #raw .. ' bytes, more than the limit of ' .. max_bytes
  end
  if rule.sealed then return check_sealed(raw) end
  if raw_writer and rule.py then return python_only('this field', rule.py) end
  if not valid_utf8(raw) then return 'not valid UTF-8' end
  local v, err = decode_json(raw)
  if v == nil then return err end
  return check_node(rule, v, rule.secret)
end

local function invalid(problems)
  local parts = {}
  for _, p in ipairs(problems) do parts[#parts + 1] = p[1] .. ': ' .. p[2] end
  return redis.error_reply('HP_INVALID ' .. table.concat(parts, '; '))
end
