"""The Lua scripts behind :class:`~orchestrator.limits.redis_limiter.RedisLimiter` (one atomic step each).

Every bucket has three keys, ``<prefix><name>:`` + ``s``, ``l`` and ``f``; time is Redis's own (one clock
for every worker).

* **Slots** (``f``, member → start ms): calls admitted (in flight, or about to start within the short
  wait) and slots booked for postponed tasks. A slot counts from its start until its call settles, and
  at most until ``start + margin + window``.
* **Log** (``l``, member → stamp ms): settled calls, stamped with the earlier of their answer and
  ``start + margin``; each counts until ``stamp + window``. The provider received the request by its
  stamp, so no window as the provider counts it holds more than the limit.
* **State** (``s``, a hash): ``t:<member>`` the tokens of each slot and log entry, ``b:<member>`` set for
  a booked slot not yet taken, ``lt``/``ft`` the token sums of the log and the slots, ``pause`` (ms: no
  call before), ``rl``/``ru`` and ``tl``/``tu`` (requests/tokens the provider still accepts until ms),
  ``qc`` (why the queue of booked slots formed), ``seq``, ``exp`` (when the keys expire), ``seen``.

A new slot starts now only if it fits at every moment it counts (slots booked to start meanwhile
included); otherwise after every existing slot (first come, first served), so that the count of the
bucket only falls after it: the script finds that earliest time by walking the slots and log entries in
the order they stop counting. The keys expire :data:`KEEP_MS` after the last moment anything in them
may matter (the latest booked slot, pause or provider reset, plus a window); the expiry is renewed
only when that moment moves past it, and set on a key the script creates.
"""

from __future__ import annotations

__all__ = ["KEEP_MS", "RESERVE", "SETTLE", "USAGE"]

#: How long past the last moment that matters a bucket's keys are kept, in ms (renewed lazily).
KEEP_MS = 300_000

_COMMON = (
    """
local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local CHUNK = 200
local KEEP = """
    + str(KEEP_MS)
    + """

local function num(v) return tonumber(v) or 0 end

local function fields(prefix, members)
    local out = {}
    for j = 1, #members do out[j] = prefix .. members[j] end
    return out
end

-- ZRANGEBYSCORE in chunks (keeps unpack() far below Lua's stack limit); ``fn`` must remove what it is
-- given, since every chunk is read from the start of the range.
local function each_range(key, low, high, fn)
    while true do
        local part = redis.call("ZRANGEBYSCORE", key, low, high, "LIMIT", 0, CHUNK)
        if #part == 0 then return end
        fn(part)
        if #part < CHUNK then return end
    end
end

-- Sum of the tokens of ``members``.
local function tokens_of(b, members)
    local sum = 0
    if #members > 0 then
        for _, v in ipairs(redis.call("HMGET", b.s, unpack(fields("t:", members)))) do sum = sum + num(v) end
    end
    return sum
end

-- Drop log entries and slots that no longer count at ``now`` (a slot whose call never settled
-- stops counting at start + margin + window). Returns the tokens dropped from the log and the slots.
local function prune(b)
    local log_gone, slot_gone = 0, 0
    each_range(b.l, "-inf", now - b.w, function(part)
        log_gone = log_gone + tokens_of(b, part)
        redis.call("HDEL", b.s, unpack(fields("t:", part)))
        redis.call("ZREM", b.l, unpack(part))
    end)
    each_range(b.f, "-inf", now - b.m - b.w, function(part)
        slot_gone = slot_gone + tokens_of(b, part)
        redis.call("HDEL", b.s, unpack(fields("t:", part)))
        redis.call("HDEL", b.s, unpack(fields("b:", part)))
        redis.call("ZREM", b.f, unpack(part))
    end)
    return log_gone, slot_gone
end

-- Keep the keys while anything in them may matter: renew every expiry when that moment passes the
-- one set, else set it on the keys this call created (``fresh``). ``horizon``: the last moment.
local function keep(b, horizon, stored, fresh)
    local until_ms = horizon + b.w + b.m + KEEP
    if stored < horizon + b.w + b.m + 60000 then
        redis.call("HSET", b.s, "exp", until_ms)
        for _, key in ipairs({b.s, b.l, b.f}) do redis.call("PEXPIREAT", key, until_ms) end
    else
        for _, key in ipairs(fresh) do redis.call("PEXPIREAT", key, stored) end
    end
end
"""
)

#: KEYS: the bucket registry, then 3 keys per bucket. ARGV: holder, max_wait_ms, recheck (1: may answer 3),
#: n, then 6 per bucket: name, requests per window (0: none), tokens per window (0: none), window_ms,
#: margin_ms, estimate. Returns {now, start, status, bucket index (1-based), cause}: status 0 admitted
#: (start <= now + max_wait: sleep until start), 1 booked (a slot is held at start: postpone until then),
#: 2 postpone until start without a slot (the provider's pause or caps), 3 look again shortly (the call
#: waits only for unsettled calls' estimates, which may come back). Cause: 1 requests, 2 tokens,
#: 3 provider, 0 none.
RESERVE = (
    _COMMON
    + """
local holder, max_wait, recheck, n = ARGV[1], tonumber(ARGV[2]), ARGV[3] == "1", tonumber(ARGV[4])
local B = {}
for i = 1, n do
    local k, a = 1 + (i - 1) * 3, 4 + (i - 1) * 6
    B[i] = {s = KEYS[k + 1], l = KEYS[k + 2], f = KEYS[k + 3],
            name = ARGV[a + 1], req = tonumber(ARGV[a + 2]), tok = tonumber(ARGV[a + 3]),
            w = tonumber(ARGV[a + 4]), m = tonumber(ARGV[a + 5]), est = tonumber(ARGV[a + 6])}
    B[i].limited = B[i].req > 0 or B[i].tok > 0
end

-- The entries of key scored above ``cut``, ascending, as an iterator of {score + offset, tokens}.
local function stream(b, key, cut, offset)
    local items, pos, skip = {}, 1, 0
    local function fill()
        local part = redis.call("ZRANGEBYSCORE", key, "(" .. cut, "+inf", "WITHSCORES", "LIMIT", skip, CHUNK)
        skip = skip + #part / 2
        items, pos = {}, 1
        if #part == 0 then return end
        local members = {}
        for j = 1, #part, 2 do members[#members + 1] = part[j] end
        local toks = b.tok > 0 and redis.call("HMGET", b.s, unpack(fields("t:", members))) or {}
        for j = 1, #members do items[j] = {tonumber(part[2 * j]) + offset, num(toks[j])} end
    end
    fill()
    return function()
        if pos > #items then
            if #items < CHUNK then return nil end
            fill()
            if #items == 0 then return nil end
        end
        local item = items[pos]
        pos = pos + 1
        return item
    end
end

-- When each counted entry stops counting, ascending: log entries at stamp + window, slots at start +
-- margin + window (the third value of each item is 1 for a slot).
local function ends(b, at)
    local logs, slots = stream(b, b.l, at - b.w, b.w), stream(b, b.f, at - b.m - b.w, b.m + b.w)
    local l, s = logs(), slots()
    return function()
        local item
        if s and (not l or s[1] <= l[1]) then
            item, s = {s[1], s[2], 1}, slots()
        elseif l then
            item, l = {l[1], l[2], 0}, logs()
        end
        return item
    end
end

-- Tokens of the entries of key scored in (low, high].
local function tokens_between(b, key, low, high)
    local sum, skip = 0, 0
    while true do
        local part = redis.call("ZRANGEBYSCORE", key, "(" .. low, high, "LIMIT", skip, CHUNK)
        if #part == 0 then break end
        sum = sum + tokens_of(b, part)
        if #part < CHUNK then break end
        skip = skip + CHUNK
    end
    return sum
end

local function room(b, count, tokens)
    return (b.req == 0 or count + 1 <= b.req) and (b.tok == 0 or tokens + b.est <= b.tok)
end

local function state(b)
    local st = redis.call("HMGET", b.s, "lt", "ft", "pause", "rl", "ru", "tl", "tu", "qc", "exp", "seen",
        "b:" .. holder)
    local last = b.limited and redis.call("ZRANGE", b.f, -1, -1, "WITHSCORES") or {}
    return {lt = math.max(num(st[1]), 0), ft = math.max(num(st[2]), 0), pause = num(st[3]), rl = num(st[4]),
            ru = num(st[5]), tl = num(st[6]), tu = num(st[7]), qc = num(st[8]), exp = num(st[9]),
            seen = num(st[10]), booked = st[11] ~= false, last = #last > 0 and tonumber(last[2]) or 0,
            slots = b.limited and redis.call("ZCARD", b.f) or 0}
end

-- Whether a call fits b now: its slot would count from now until now + margin + window, so it must fit
-- at every moment of that span, slots booked to start during it included.
local function fits_now(b, st)
    if st.pause > now or (st.ru > now and st.rl < 1) or (st.tu > now and st.tl < b.est) then return false end
    if not b.limited then return true end
    local ahead = st.last > now and redis.call("ZCOUNT", b.f, "(" .. now, "+inf") or 0
    local count = st.slots - ahead + redis.call("ZCARD", b.l)
    local tokens = st.lt + st.ft
    if b.tok > 0 and ahead > 0 then tokens = tokens - tokens_between(b, b.f, now, "+inf") end
    if not room(b, count, tokens) then return false end
    if ahead == 0 then return true end
    local horizon, next_end, starts = now + b.m + b.w, ends(b, now), stream(b, b.f, now, 0)
    local e = next_end()
    local s = starts()
    while s and s[1] < horizon do
        while e and e[1] <= s[1] do
            count, tokens = count - 1, tokens - e[2]
            e = next_end()
        end
        count, tokens = count + 1, tokens + s[2]
        if not room(b, count, tokens) then return false end
        s = starts()
    end
    return true
end

-- Earliest time a call fits b after every slot already in it (first come, first served), and the
-- cause of the wait. ``settling`` is true when the wait is for unsettled calls, counted at their
-- estimates until their slots end: they may come back sooner, with less.
local function fit(b, st)
    local at, cause = now, 0
    if st.pause > at then at, cause = st.pause, 3 end
    if b.limited and st.last > at then at, cause = st.last, st.qc end
    if st.ru > at and st.rl < 1 then at, cause = st.ru, 3 end
    if st.tu > at and st.tl < b.est then at, cause = st.tu, 3 end
    if not b.limited then return at, cause, false end
    -- Counting at ``at``: every slot (all start by then) not past start + margin + window, and log
    -- entries not past stamp + window; both only fall after ``at``.
    local count = redis.call("ZCOUNT", b.f, "(" .. (at - b.m - b.w), "+inf")
        + redis.call("ZCOUNT", b.l, "(" .. (at - b.w), "+inf")
    local tokens = 0
    if b.tok > 0 then
        tokens = st.lt + st.ft
        if at > now then
            tokens = tokens - tokens_between(b, b.f, now - b.m - b.w, at - b.m - b.w)
                - tokens_between(b, b.l, now - b.w, at - b.w)
        end
    end
    if room(b, count, tokens) then return at, cause, false end
    cause = (b.req > 0 and count + 1 > b.req) and 1 or 2
    local settling, next_end = false, ends(b, at)
    while not room(b, count, tokens) do
        local e = next_end()
        if not e then break end
        if e[3] == 1 and e[1] - b.m - b.w <= now then settling = true end
        at, count, tokens = math.max(at, e[1]), count - 1, tokens - e[2]
    end
    return at, cause, settling
end

-- Give up a slot (a booking that lapsed, or is held where another bucket makes the call wait).
local function release(b, st, member)
    local est = num(redis.call("HGET", b.s, "t:" .. member))
    redis.call("ZREM", b.f, member)
    redis.call("HDEL", b.s, "t:" .. member, "b:" .. member)
    st.ft, st.slots = math.max(st.ft - est, 0), st.slots - 1
    redis.call("HSET", b.s, "ft", st.ft)
end

local states, held = {}, {}
for i, b in ipairs(B) do
    local log_gone, slot_gone = 0, 0
    if b.limited then log_gone, slot_gone = prune(b) end
    local st = state(b)
    if log_gone + slot_gone > 0 then
        st.lt, st.ft = math.max(st.lt - log_gone, 0), math.max(st.ft - slot_gone, 0)
        redis.call("HSET", b.s, "lt", st.lt, "ft", st.ft)
    end
    if b.limited and st.booked then
        local start = tonumber(redis.call("ZSCORE", b.f, holder))
        if start and now <= start + b.m and st.pause <= start + b.m then
            held[i] = start
        else
            release(b, st, holder)  -- the task came back too late, or the provider paused past it
        end
    end
    states[i] = st
end

-- Now, if every bucket has room now (a slot held for this holder counts once it has begun).
local at, index, status, cause = now, 0, 0, 0
local ready = true
for i, b in ipairs(B) do
    if held[i] then
        if held[i] > now or states[i].pause > now then ready = false end
    elseif not fits_now(b, states[i]) then
        ready = false
    end
end

local fits, causes, settling = {}, {}, {}
local function latest()
    local best, which = now, 0
    for i = 1, n do if fits[i] > best then best, which = fits[i], i end end
    return best, which
end
if not ready then
    -- Else the earliest time every bucket has room after the slots already in it.
    for i, b in ipairs(B) do
        if held[i] then
            fits[i], causes[i], settling[i] = math.max(held[i], states[i].pause), states[i].qc, false
        else
            fits[i], causes[i], settling[i] = fit(b, states[i])
        end
    end
    at, index = latest()
    -- A slot held here is only good for a call that starts within its margin; else queue afresh.
    for _ = 1, n do
        local changed = false
        for i, b in ipairs(B) do
            if held[i] and at > held[i] + b.m then
                release(b, states[i], holder)
                held[i] = nil
                local last = redis.call("ZRANGE", b.f, -1, -1, "WITHSCORES")
                states[i].last = #last > 0 and tonumber(last[2]) or 0
                fits[i], causes[i], settling[i] = fit(b, states[i])
                changed = true
            end
        end
        if not changed then break end
        at, index = latest()
    end
    cause = index > 0 and causes[index] or 0
    if at > now + max_wait then
        status = 2
        if recheck and index > 0 and settling[index] and not held[index] then
            status = 3
        end
    end
end

-- Take a slot in b at ``start`` (``booked``: held for the task's return).
local function take(b, st, start, booked)
    if redis.call("ZADD", b.f, "NX", start, holder) == 0 then
        -- This holder already has a slot in use that never settled (its run was lost): that one keeps
        -- counting, under another name.
        local old = redis.call("ZSCORE", b.f, holder)
        local renamed = holder .. "~" .. redis.call("HINCRBY", b.s, "seq", 1)
        local est = redis.call("HGET", b.s, "t:" .. holder)
        redis.call("ZADD", b.f, old, renamed)
        if est then redis.call("HSET", b.s, "t:" .. renamed, est) end
        redis.call("ZADD", b.f, start, holder)
    end
    st.ft, st.slots = st.ft + b.est, st.slots + 1
    redis.call("HSET", b.s, "t:" .. holder, b.est, "ft", st.ft)
    if booked then redis.call("HSET", b.s, "b:" .. holder, 1) end
    if start > st.last then st.last = start end
end

if status == 0 then
    for i, b in ipairs(B) do
        local st = states[i]
        if held[i] then
            redis.call("HDEL", b.s, "b:" .. holder)
        elseif b.limited then
            take(b, st, at, false)
        end
        if st.ru > at then redis.call("HINCRBY", b.s, "rl", -1) end
        if st.tu > at then redis.call("HINCRBY", b.s, "tl", -b.est) end
    end
elseif status == 2 then
    for i, b in ipairs(B) do
        if fits[i] == at and b.limited and causes[i] ~= 3 then
            if not held[i] then
                take(b, states[i], at, true)
                if causes[i] == 1 or causes[i] == 2 then redis.call("HSET", b.s, "qc", causes[i]) end
            end
            status = 1
        elseif held[i] then
            release(b, states[i], holder)  -- held here while another bucket makes it wait: give it back
        end
    end
end
for i, b in ipairs(B) do
    local st = states[i]
    if now - st.seen > 10000 then
        redis.call("ZADD", KEYS[1], now, b.name)
        redis.call("HSET", b.s, "seen", now)
    end
    local fresh = {}
    if st.slots == 1 and not held[i] then fresh[1] = b.f end  -- the slot just taken created the key
    keep(b, math.max(now, st.last, st.pause, st.ru, st.tu), st.exp, fresh)
end
return {now, at, status, index, cause}
"""
)

#: KEYS: 3 per bucket. ARGV: holder, tokens used (-1: keep the estimate), pause_ms (0: none),
#: requests remaining, requests reset ms, tokens remaining, tokens reset ms (-1: not reported), n, then
#: 3 per bucket: window_ms, margin_ms, 1 when the provider's word applies to it (its model bucket).
SETTLE = (
    _COMMON
    + """
-- Ends are rounded up to the millisecond: a call answered at 12.3456 s counts until after 12.346 + window.
local later = tonumber(clock[1]) * 1000 + math.ceil(tonumber(clock[2]) / 1000)
local holder, used, pause_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rl, ru = tonumber(ARGV[4]), tonumber(ARGV[5])
local tl, tu, n = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
for i = 1, n do
    local k, a = (i - 1) * 3, 8 + (i - 1) * 3
    local b = {s = KEYS[k + 1], l = KEYS[k + 2], f = KEYS[k + 3], w = tonumber(ARGV[a + 1]),
               m = tonumber(ARGV[a + 2])}
    local st = redis.call("HMGET", b.s, "t:" .. holder, "b:" .. holder, "lt", "ft", "pause", "exp", "ru",
        "tu", "seq")
    local start = redis.call("ZSCORE", b.f, holder)
    local updates, fresh = {}, {}
    if start and not st[2] then
        start = tonumber(start)
        local est = num(st[1])
        redis.call("ZREM", b.f, holder)
        redis.call("HDEL", b.s, "t:" .. holder)
        updates[#updates + 1], updates[#updates + 2] = "ft", math.max(num(st[4]) - est, 0)
        local stamp = math.min(later, start + b.m)
        if stamp > now - b.w then
            local tokens = used >= 0 and used or est
            local seq = num(st[9]) + 1
            local id = holder .. "#" .. seq
            redis.call("ZADD", b.l, stamp, id)
            fresh[1] = b.l  -- it may have just been created
            updates[#updates + 1], updates[#updates + 2] = "seq", seq
            updates[#updates + 1], updates[#updates + 2] = "t:" .. id, tokens
            updates[#updates + 1], updates[#updates + 2] = "lt", math.max(num(st[3]), 0) + tokens
        end
    end
    local pause, ru_at, tu_at = num(st[5]), num(st[7]), num(st[8])
    if ARGV[a + 3] == "1" then
        if pause_ms > 0 and later + pause_ms > pause then
            pause = later + pause_ms
            updates[#updates + 1], updates[#updates + 2] = "pause", pause
        end
        if rl >= 0 and ru >= 0 then
            ru_at = later + ru
            updates[#updates + 1], updates[#updates + 2] = "rl", rl
            updates[#updates + 1], updates[#updates + 2] = "ru", ru_at
        end
        if tl >= 0 and tu >= 0 then
            tu_at = later + tu
            updates[#updates + 1], updates[#updates + 2] = "tl", tl
            updates[#updates + 1], updates[#updates + 2] = "tu", tu_at
        end
    end
    if #updates > 0 then
        redis.call("HSET", b.s, unpack(updates))
        -- (booked slots ahead were kept for when they were booked)
        keep(b, math.max(now, pause, ru_at, tu_at), num(st[6]), fresh)
    end
end
return now
"""
)

#: KEYS: 3 per bucket. ARGV: n, then 2 per bucket: window_ms, margin_ms. Read only. Returns per bucket
#: {requests counting now, tokens counting now, in flight, booked ahead, paused ms left, provider requests
#: left (-1: none reported), ms until then, provider tokens left, ms until then}.
USAGE = """
local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function num(v) return tonumber(v) or 0 end
local function tokens(s, key, low, high)
    local sum, skip = 0, 0
    while true do
        local part = redis.call("ZRANGEBYSCORE", key, low, high, "LIMIT", skip, 200)
        if #part == 0 then break end
        for j = 1, #part do part[j] = "t:" .. part[j] end
        for _, v in ipairs(redis.call("HMGET", s, unpack(part))) do sum = sum + num(v) end
        if #part < 200 then break end
        skip = skip + 200
    end
    return sum
end
local out = {}
for i = 1, tonumber(ARGV[1]) do
    local k = (i - 1) * 3
    local s, l, f = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
    local w, m = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    local st = redis.call("HMGET", s, "lt", "ft", "pause", "rl", "ru", "tl", "tu")
    local logged = redis.call("ZCOUNT", l, "(" .. (now - w), "+inf")
    local flying = redis.call("ZCOUNT", f, "(" .. (now - m - w), now)
    local ahead = redis.call("ZCOUNT", f, "(" .. now, "+inf")
    local used = math.max(num(st[1]) - tokens(s, l, "-inf", now - w), 0)
        + math.max(num(st[2]) - tokens(s, f, "-inf", now - m - w) - tokens(s, f, "(" .. now, "+inf"), 0)
    local function left(until_ms) return math.max(num(until_ms) - now, 0) end
    local rl = left(st[5]) > 0 and num(st[4]) or -1
    local tl = left(st[7]) > 0 and num(st[6]) or -1
    out[i] = {logged + flying, used, flying, ahead, left(st[3]), rl, left(st[5]), tl, left(st[7])}
end
return out
"""
