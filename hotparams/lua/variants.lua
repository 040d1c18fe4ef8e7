-- variants.lua: part of the hotparams Lua library, appended to the files before
-- it at load time (hotparams/library.py PARTS); the checks of an A/B
-- variants document (see hotparams/variants.py).

-- ------------------------------------------------------------------ variants

local BUCKETS = 10000
local MAX_VARIANTS_BYTES = 1048576

local function is_array(t)
  return type(t) == 'table' and (next(t) == nil or t[1] ~= nil)
end

-- Check the variants document (see hotparams/variants.py); returns nil or
-- an error reply.  Overrides obey the field rules; bucket ranges of all
-- variants are disjoint; a user is on one allow-list at most.
local function check_variants(rules, text, max_bytes, raw_writer)
  local function bad(msg) return redis.error_reply('HP_INVALID @variants: ' .. msg) end
  if #text > MAX_VARIANTS_BYTES then return bad('larger than 1 MiB') end
  if not valid_utf8(text) then return bad('not valid UTF-8') end
  local doc, why = decode_json(text)
  if doc == nil then return bad(why) end
  if kind_of(doc) ~= 'object' or kind_of(doc.variants) ~= 'object'
      or type(doc.salt) ~= 'string' or #doc.salt == 0 or #doc.salt > 64 then
    return bad('must be {"salt": "...", "variants": {...}}')
  end
  local problems, spans, owner = {}, {}, {}
  for _, name in ipairs(sorted_keys(doc.variants)) do
    local spec = doc.variants[name]
    if type(name) ~= 'string' or #name > 64 or not name:match('^[%w][%w_%.%-]*$') then
      return bad('variant name ' .. cjson.encode(name) .. ' is not valid')
    end
    if kind_of(spec) ~= 'object' then return bad('variant ' .. name .. ' must be an object') end
    local overrides = spec.overrides or {}
    if kind_of(overrides) ~= 'object' then
      return bad('variant ' .. name .. ': overrides must be an object')
    end
    for _, field in ipairs(sorted_keys(overrides)) do
      local rule = rules.fields[field]
      if not field:match('^[%a_][%w_]*$') or #field > 128 then
        return bad('variant ' .. name .. ': ' .. cjson.encode(field) .. ' is not a field name')
      end
      local where = 'variant ' .. name .. ' ' .. field
      local reason
      if not rule then
        reason = 'unknown field'
      elseif #cjson.encode(overrides[field]) > max_bytes then
        reason = 'value is more than the limit of ' .. max_bytes .. ' bytes'
      elseif rule.sealed then  -- an encrypted secret: a token, never a value
        local value = overrides[field]
        reason = check_sealed(type(value) == 'string' and cjson.encode(value) or '')
      elseif raw_writer and rule.py then
        reason = python_only('this field', rule.py)
      else
        reason = check_node(rule, overrides[field], rule.secret)
      end
      if reason then problems[#problems + 1] = { where, reason } end
    end
    local buckets = spec.buckets or {}
    if kind_of(buckets) ~= 'array' and next(buckets) ~= nil then
      return bad('variant ' .. name .. ': buckets must be a list')
    end
    if not is_array(buckets) then return bad('variant ' .. name .. ': buckets must be a list') end
    for _, r in ipairs(buckets) do
      if not is_array(r) or #r ~= 2 or type(r[1]) ~= 'number' or type(r[2]) ~= 'number'
          or r[1] ~= math.floor(r[1]) or r[2] ~= math.floor(r[2])
          or r[1] < 0 or r[2] > BUCKETS or r[1] >= r[2] then
        return bad('variant ' .. name .. ': buckets must be [start, end) ranges within 0-'
          .. BUCKETS)
      end
      spans[#spans + 1] = { r[1], r[2], name }
    end
    local users = spec.users or {}
    if kind_of(users) ~= 'array' and next(users) ~= nil then
      return bad('variant ' .. name .. ': users must be a list')
    end
    if not is_array(users) then return bad('variant ' .. name .. ': users must be a list') end
    for _, user in ipairs(users) do
      if type(user) ~= 'string' or #user == 0 or #user > 256 then
        return bad('variant ' .. name .. ': user ids must be strings of 1-256 bytes')
      end
      if owner[user] and owner[user] ~= name then
        return bad('user ' .. cjson.encode(user) .. ' is on the allow-lists of '
          .. owner[user] .. ' and ' .. name)
      end
      owner[user] = name
    end
  end
  table.sort(spans, function(a, b) return a[1] < b[1] end)
  for i = 2, #spans do
    if spans[i][1] < spans[i - 1][2] then
      return bad('the buckets of ' .. spans[i - 1][3] .. ' and ' .. spans[i][3] .. ' overlap')
    end
  end
  if #problems > 0 then return invalid(problems) end
  return nil
end

-- The variants document with secret override values masked (for the audit);
-- also tells whether it held any secret.
local function masked_variants(rules, text)
  local doc = cjson.decode(text)
  local secret = false
  for _, spec in pairs(doc.variants) do
    for field in pairs(spec.overrides or {}) do
      if rules.fields[field] and rules.fields[field].secret then
        spec.overrides[field] = MASK
        secret = true
      end
    end
    -- cjson writes an empty list as {}: leave empty lists out instead
    if spec.users and next(spec.users) == nil then spec.users = nil end
    if spec.buckets and next(spec.buckets) == nil then spec.buckets = nil end
  end
  if not secret then return text, false end
  return cjson.encode(doc), true
end
