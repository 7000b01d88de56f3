#!/usr/bin/env python3
"""Reference decoder of Kestrel's wire format, written from docs/wire.md.

Standard library plus msgpack (Debian: python3-msgpack). It decodes batch
payloads of version 3 (and versions 2 and 1) into the records' JSON objects, as
`kestrelctl decode` prints them.

    python3 kestrel_wire.py --vectors ../testdata/vectors/vectors.json
        decodes every golden vector and compares with its JSON (exit 1 on
        any difference)
    python3 kestrel_wire.py TOPIC HEX
        prints the records of one payload, one JSON object a line

It is deliberately plain: each function follows one section of the spec.
"""

import json
import sys
from decimal import Decimal

import msgpack

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1


class FormatError(Exception):
    """A payload that is not a well-formed Kestrel batch."""


class VersionError(FormatError):
    """A payload of a version this decoder does not know."""


# --- integers --------------------------------------------------------------

def s64(v):
    v &= M64
    return v - (1 << 64) if v >> 63 else v


def s32(v):
    v &= M32
    return v - (1 << 32) if v >> 31 else v


def s16(v):
    v &= 0xFFFF
    return v - (1 << 16) if v >> 15 else v


def unzigzag(u):
    return s64((u >> 1) ^ -(u & 1))


def tdiv(a, b):
    """Division truncating toward zero (Go's / on integers)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def tmod(a, b):
    """Remainder with the dividend's sign (Go's %)."""
    return a - tdiv(a, b) * b


# --- spec "Range coder" ----------------------------------------------------

class Ctx:
    """An adaptive binary context: counts of zeros and ones."""
    __slots__ = ("n0", "n1")

    def __init__(self):
        self.n0 = 0
        self.n1 = 0

    def p0(self):
        p = ((2 * self.n0 + 1) << 12) // (2 * (self.n0 + self.n1) + 2)
        return min(max(p, 1), 4095)

    def update(self, bit):
        if bit:
            self.n1 += 1
        else:
            self.n0 += 1
        if self.n0 == 255 or self.n1 == 255:
            self.n0 = (self.n0 + 1) >> 1
            self.n1 = (self.n1 + 1) >> 1


class RangeDecoder:
    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.rng = M32
        self.code = 0
        for _ in range(4):
            self.code = ((self.code << 8) | self.next()) & M32

    def next(self):
        p = self.pos
        self.pos += 1
        return self.data[p] if p < len(self.data) else 0

    def normalize(self):
        while self.rng < 1 << 24:
            self.rng = (self.rng << 8) & M32
            self.code = ((self.code << 8) | self.next()) & M32

    def bit(self, ctx):
        bound = (self.rng >> 12) * ctx.p0()
        if self.code < bound:
            self.rng = bound
            b = 0
        else:
            self.code -= bound
            self.rng -= bound
            b = 1
        ctx.update(b)
        self.normalize()
        return b

    def bypass(self, n):
        v = 0
        for _ in range(n):
            self.rng >>= 1
            b = 0
            if self.code >= self.rng:
                self.code -= self.rng
                b = 1
            v = (v << 1) | b
            self.normalize()
        return v

    # spec "Integer codes"
    def eg0(self):
        z = 0
        while self.bypass(1) == 0:
            z += 1
            if z > 64:
                raise FormatError("Exp-Golomb prefix longer than 64")
        return (((1 << z) | self.bypass(z)) - 1) & M64

    def varbits(self):
        n1 = self.eg0()
        if n1 == 0:
            return self.bypass(1)
        if n1 > 63:
            raise FormatError("varbits longer than 64 bits")
        return (1 << n1) | self.bypass(n1)


RICE_ESCAPE = 24
SETS = 4


class Residuals:
    """The adaptive state of one column's residual code."""

    def __init__(self):
        self.sets = [[Ctx() for _ in range(RICE_ESCAPE + 1)] for _ in range(SETS)]
        self.prev = 0

    def rice(self, rd, k):
        ctx = self.sets[self.prev]
        q = 0
        while q < RICE_ESCAPE and rd.bit(ctx[q]) == 1:
            q += 1
        self.prev = min(q, SETS - 1)
        if q == RICE_ESCAPE:
            return rd.varbits()
        return ((q << k) | rd.bypass(k)) & M64

    def eg(self, rd, k):
        ctx = self.sets[self.prev]
        z = 0
        while rd.bit(ctx[min(z, RICE_ESCAPE)]) == 1:
            z += 1
            if z > 64:
                raise FormatError("Exp-Golomb prefix longer than 64")
        self.prev = min(z, SETS - 1)
        m = ((1 << z) | rd.bypass(z)) & M64
        return (((m - 1) << k) | rd.bypass(k)) & M64


# --- spec "Columns" ----------------------------------------------------------

REF, CONST, LINEAR, DELTA, DOD, RAW, TDOD = range(7)


def tdod_predict(vals, times, i):
    if i < 2:
        return vals[i - 1]
    d = s64(vals[i - 1] - vals[i - 2])
    dt_prev = s64(times[i - 1] - times[i - 2])
    dt = s64(times[i] - times[i - 1])
    if dt_prev <= 0 or dt < 0:
        return (vals[i - 1] + d) & M64
    prod = abs(d) * dt
    if prod >> 64 >= dt_prev:
        return (vals[i - 1] + d) & M64
    q, rem = divmod(prod, dt_prev)
    if rem >= dt_prev - rem:
        q += 1
    q &= M64
    if d < 0:
        q = -q
    return (vals[i - 1] + q) & M64


def divisor(rd):
    e = rd.eg0()
    m = (rd.eg0() + 1) & M64
    if e > 19:
        raise FormatError("divisor exponent %d" % e)
    return (m * 10 ** e) & M64


def read_column(rd, n, times, ref, v2, wide=False, sec_steps=False):
    if n == 0:
        return []
    if v2:
        shape = rd.bypass(3) if rd.bypass(1) else REF
    else:
        shape = rd.read(3)
    if shape == REF:
        return [ref] * n
    if wide:
        out = [(ref + s32(rd.bypass(32))) & M64]
    else:
        out = [(ref + unzigzag(rd.varbits())) & M64]
    if shape == CONST:
        return out * n
    if shape == LINEAR:
        if sec_steps and rd.bypass(1) == 1:
            step = unzigzag(rd.varbits()) * 1000  # version 3's time column
        else:
            step = unzigzag(rd.varbits())
        for i in range(1, n):
            out.append((out[-1] + step) & M64)
        return out
    if shape not in (DELTA, DOD, RAW, TDOD):
        raise FormatError("unknown shape %d" % shape)
    if shape == TDOD and len(times) != n:
        raise FormatError("time-scaled shape without times")
    if v2:
        g = divisor(rd)
        rice = rd.bypass(1) == 1
        k = rd.eg0()
        if k > 63:
            raise FormatError("order %d" % k)
        res = Residuals()
        read = (lambda: res.rice(rd, k)) if rice else (lambda: res.eg(rd, k))
    else:
        g = (rd.eg0() + 1) & M64
        rice = rd.read(1) == 1
        k = rd.read(6)
        read = (lambda: rd.rice(k)) if rice else (lambda: rd.eg(k))
    delta = 0
    for i in range(1, n):
        q = (unzigzag(read()) * g) & M64
        if shape == RAW:
            out.append((ref + q) & M64)
        elif shape == DELTA:
            out.append((out[-1] + q) & M64)
        elif shape == TDOD:
            out.append((tdod_predict(out, times, i) + q) & M64)
        else:
            delta = (delta + q) & M64
            out.append((out[-1] + delta) & M64)
    return out


# --- spec "Speed and track prediction" --------------------------------------

COS_Q30 = [1073741824, 1073578288, 1073087729, 1072270298, 1071126243, 1069655912, 1067859754, 1065738315, 1063292242, 1060522280, 1057429273, 1054014162, 1050277989, 1046221891, 1041847103, 1037154959, 1032146887, 1026824413, 1021189159, 1015242840, 1008987269, 1002424350, 995556083, 988384560, 980911966, 973140576, 965072759, 956710970, 948057759, 939115760, 929887697, 920376381, 910584710, 900515665, 890172315, 879557810, 868675383, 857528349, 846120104, 834454122, 822533958, 810363241, 797945680, 785285058, 772385229, 759250125, 745883746, 732290163, 718473518, 704438018, 690187940, 675727625, 661061475, 646193961, 631129609, 615873009, 600428808, 584801711, 568996477, 553017922, 536870912, 520560366, 504091252, 487468587, 470697435, 453782903, 436730145, 419544355, 402230767, 384794656, 367241333, 349576144, 331804471, 313931728, 295963357, 277904834, 259761657, 241539355, 223243478, 204879599, 186453311, 167970228, 149435979, 130856211, 112236583, 93582766, 74900443, 56195305, 37473049, 18739379, 0]
ATAN_NANO = [45000000000, 26565051177, 14036243468, 7125016349, 3576334375, 1789910608, 895173710, 447614171, 223810500, 111905677, 55952892, 27976453, 13988227, 6994114, 3497057, 1748528, 874264, 437132, 218566, 109283, 54642, 27321, 13660, 6830]
SPEED_MUL = 44252226


def cos_lat(lat):
    lat = abs(lat)
    if lat >= 900000000:
        return 0
    i, f = divmod(lat, 10 ** 7)
    return COS_Q30[i] + tdiv((COS_Q30[i + 1] - COS_Q30[i]) * f, 10 ** 7)


def bearing_distance(lat1, lon1, lat2, lon2):
    dlat = lat2 - lat1
    dlon = lon2 - lon1
    if dlon > 1800000000:
        dlon -= 3600000000
    elif dlon < -1800000000:
        dlon += 3600000000
    lim = 1 << 33
    if abs(dlat) >= lim or abs(dlon) >= lim or (dlat == 0 and dlon == 0):
        return 0, 0, False
    x = dlat << 16
    y = (dlon * cos_lat(lat2)) >> 14
    z = 0
    if x < 0:
        x, y = -x, -y
        z = 180 * 10 ** 9
    for i, a in enumerate(ATAN_NANO):
        if y > 0:
            x, y = x + (y >> i), y - (x >> i)
            z += a
        else:
            x, y = x - (y >> i), y + (x >> i)
            z -= a
    track = ((z + 5 * 10 ** 6) // 10 ** 7) % 36000
    return track, x & M64, True


def predict_speed(mag, dt):
    if dt <= 0:
        return 0
    v = ((mag * SPEED_MUL) >> 32) & M64
    return s64(((v + dt // 2) & M64) // dt)


def predict_at(speed, i, lat, lon, tm, prev_track):
    if i == 0:
        return 0 if speed else prev_track
    tr, mag, ok = bearing_distance(s32(lat[i - 1]), s32(lon[i - 1]), s32(lat[i]), s32(lon[i]))
    if not speed:
        return tr if ok else prev_track
    if not ok:
        return 0
    return predict_speed(mag, s64(tm[i] - tm[i - 1]))


def unpredict(res, speed, flags, flag, lat, lon, tm):
    prev_track = 0
    j = 0
    for i in range(len(flags)):
        if not flags[i] & flag:
            continue
        if j >= len(res):
            return
        p = predict_at(speed, i, lat, lon, tm, prev_track)
        if speed:
            res[j] = (res[j] + p) & M64
        else:
            v = tmod(p + tmod(s64(res[j]), 36000), 36000)
            if v < 0:
                v += 36000
            res[j] = v
            prev_track = v
        j += 1


# --- spec "Receiver's grid" --------------------------------------------------

GRID_SCALE = [60 * 10 ** k for k in range(6)]


def from_grid(g, k):
    s = GRID_SCALE[k]
    g = s64(g)
    dd, u = divmod(abs(g), s)
    v = (dd * 10 ** 7 + (2 * u * 10 ** 7 + s) // (2 * s)) & M64
    return (-v) & M64 if g < 0 else v


# --- spec "Positions" --------------------------------------------------------

(C_FLAGS, C_TIME, C_LAT, C_LON, C_ALT, C_SPEED, C_TRACK, C_MODE, C_SEQ, C_BOOT,
 C_PRIORITY, C_SATS, C_HDOP, C_EPH, C_EPV, C_COARSENED) = range(16)
HAS_ALT, HAS_SPEED, HAS_TRACK, HAS_SATS, HAS_HDOP, HAS_EPH, HAS_EPV = 1, 2, 4, 8, 16, 32, 64
GATE = {C_ALT: HAS_ALT, C_SPEED: HAS_SPEED, C_TRACK: HAS_TRACK, C_SATS: HAS_SATS,
        C_HDOP: HAS_HDOP, C_EPH: HAS_EPH, C_EPV: HAS_EPV}


def col_ref(c, base, v2):
    if c == C_FLAGS:
        return HAS_ALT | HAS_SPEED | HAS_TRACK | HAS_SATS | HAS_HDOP if v2 else 0
    return {C_TIME: base["time"], C_SEQ: base["seq"], C_BOOT: base["boot"],
            C_PRIORITY: 1, C_MODE: 3}.get(c, 0)


def read_positions(rd, n, slots, base, v2, v3=False):
    """Returns n positions as dicts of record fields; slots are their
    indices in the batch."""
    if n == 0:
        return []
    flags = read_column(rd, n, None, col_ref(C_FLAGS, base, v2), v2)
    pos = [{"flags": f & 0xFFFF} for f in flags]
    lat = lon = tm = None
    for c in range(C_TIME, C_COARSENED + 1):
        gate = GATE.get(c, 0)
        idx = [i for i in range(n) if not gate or pos[i]["flags"] & gate]
        m = len(idx)
        grid = 0
        if v2 and c in (C_LAT, C_LON):
            grid = rd.bypass(3)
            if grid > 6:
                raise FormatError("unknown grid %d" % grid)
        predicted = False
        if c in (C_SPEED, C_TRACK) and m > 0:
            predicted = (rd.bypass(1) if v2 else rd.read(1)) == 1
        times = None
        if c in (C_LAT, C_LON):
            times = tm
        elif c == C_ALT:
            times = [tm[i] for i in range(n) if flags[i] & HAS_ALT]
        col = read_column(rd, m, times, col_ref(c, base, v2), v2, v2 and c in (C_LAT, C_LON),
                          v3 and c == C_TIME)
        if grid:
            col = [from_grid(g, grid - 1) for g in col]
        if c == C_SEQ and v2:
            col = [(v + slots[j]) & M64 for j, v in enumerate(col)]
        if c == C_TIME:
            tm = col
        elif c == C_LAT:
            lat = col
        elif c == C_LON:
            lon = col
        if predicted:
            unpredict(col, c == C_SPEED, flags, gate, lat, lon, tm)
        name = {C_TIME: "time", C_LAT: "lat", C_LON: "lon", C_ALT: "alt", C_SPEED: "speed",
                C_TRACK: "track", C_MODE: "mode", C_SEQ: "seq", C_BOOT: "boot",
                C_PRIORITY: "priority", C_SATS: "sats", C_HDOP: "hdop", C_EPH: "eph",
                C_EPV: "epv", C_COARSENED: "coarsened"}[c]
        conv = {"time": s64, "lat": s32, "lon": s32, "alt": s32, "speed": s32,
                "track": lambda v: v & 0xFFFF, "mode": lambda v: v & 0xFF,
                "seq": lambda v: v & M64, "boot": lambda v: v & M32,
                "priority": lambda v: v & 0xFF, "sats": lambda v: v & 0xFF,
                "hdop": lambda v: v & 0xFFFF, "eph": lambda v: v & M32,
                "epv": lambda v: v & M32, "coarsened": lambda v: v & M32}[name]
        for j, i in enumerate(idx):
            pos[i][name] = conv(col[j])
    return pos


# --- version 1's bit stream (spec "Version 1") -------------------------------

class BitReader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def read(self, n):
        if n > len(self.data) * 8 - self.pos:
            raise FormatError("truncated bit stream")
        v = 0
        for _ in range(n):
            v = (v << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def zeros(self, limit):
        z = 0
        while self.read(1) == 0:
            z += 1
            if z > limit:
                raise FormatError("code prefix too long")
        return z

    def eg0(self):
        return self.eg(0)

    def eg(self, k):
        z = self.zeros(64)
        m = ((1 << z) | self.read(z)) & M64
        return (((m - 1) << k) | self.read(k)) & M64

    def varbits(self):
        n1 = self.eg(0)
        if n1 == 0:
            return self.read(1)
        if n1 > 63:
            raise FormatError("varbits longer than 64 bits")
        return (1 << n1) | self.read(n1)

    def rice(self, k):
        q = 0
        while q < RICE_ESCAPE and self.read(1) == 0:
            q += 1
        if q == RICE_ESCAPE:
            if self.read(1) != 1:
                raise FormatError("rice escape")
            return self.varbits()
        return ((q << k) | self.read(k)) & M64


# --- spec "Record bodies" ----------------------------------------------------

BODY_FIELDS = {
    1: ["lat", "lon", "alt", "speed", "track", "mode", "sats", "hdop", "eph", "epv", "coarsened", "flags"],
    2: ["state", "mode", "sats_in_view", "sats_used", "pdop", "hdop", "vdop", "sentences", "bad_frames", "noise_bytes"],
    3: ["profile", "registered", "online", "rssi", "ber", "rsrp", "rsrq", "tetra_mode", "identity", "talkgroup",
        "operator", "access_tech", "tac", "cell_id", "imei", "iccid",
        "operator_format", "iccid_invalid", "reg_source", "rejected_lines"],
    4: ["x", "y", "z"],
    5: ["capacity", "status", "voltage_mv", "temp_decic", "has_temp"],
    6: ["zone", "milli_c"],
    7: ["type", "source", "name", "value", "text"],
    8: ["iface", "source", "interval_ms", "rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "drops"],
    9: ["path", "pid", "ppid", "uid", "parent_comm", "allowed"],
}
STRINGS = {"identity", "talkgroup", "operator", "imei", "iccid", "status", "zone", "source", "name", "text",
           "iface", "path", "parent_comm"}
BOOLS = {"online", "has_temp", "allowed", "iccid_invalid"}
REG_STATES = ["not_registered", "home", "searching", "denied", "unknown", "roaming", "sms_only_home",
              "sms_only_roaming", "emergency_only", "csfb_not_preferred_home", "csfb_not_preferred_roaming", "rlos"]
REG_SOURCES = ["", "creg", "cgreg", "cereg", "c5greg"]
OPERATOR_FORMATS = ["long", "short", "numeric"]


def named(table, v, fmt):
    return table[v] if v < len(table) else fmt % v


def body(kind, tup):
    if kind not in BODY_FIELDS:
        raise FormatError("unknown kind %d" % kind)
    if not isinstance(tup, list):
        raise FormatError("body is not an array")
    out = {}
    for i, name in enumerate(BODY_FIELDS[kind]):
        if i < len(tup):
            out[name] = tup[i]
        else:
            out[name] = "" if name in STRINGS else False if name in BOOLS else 0
    return out


def read_others(others, base, count):
    recs = {}
    nxt = 0
    for o in others:
        if not isinstance(o, list) or len(o) < 7:
            raise FormatError("other record is not a 7-tuple")
        idx, kind, dboot, dseq, dtime, prio, tup = o[:7]
        if idx < nxt or idx >= count:
            raise FormatError("index %d out of order or range" % idx)
        nxt = idx + 1
        r = body(kind, tup)
        r.update(kind=kind, boot=(base["boot"] + dboot) & M32, seq=(base["seq"] + dseq) & M64,
                 time=s64(base["time"] + dtime), priority=prio)
        recs[idx] = r
    return recs


# --- spec "Batch" ------------------------------------------------------------

def decode_batch(payload, device=""):
    """Returns the records of one payload as dicts of record fields."""
    try:
        top = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack's own errors, whatever their class
        raise FormatError("not msgpack: %s" % e)
    if isinstance(top, bytes):
        top = [3, top]  # version 3's bare stream: positions only
    if not isinstance(top, list) or not top:
        raise FormatError("not a msgpack array")
    version = top[0]
    if version in (2, 3):
        if len(top) < 2 or not isinstance(top[1], bytes):
            raise FormatError("version %d needs a stream" % version)
        rd = RangeDecoder(top[1])
        count = rd.varbits()
        base = {"boot": rd.varbits() & M32, "seq": rd.varbits()}
        sec0 = rd.bypass(32) if rd.bypass(1) == 0 else unzigzag(rd.varbits())
        base["time"] = s64(sec0 * 1000)
        if count > 10000:
            raise FormatError("%d records, more than 10000" % count)
        others = top[2] if len(top) > 2 else []
        v2 = True
    elif version == 1:
        if len(top) < 8:
            raise FormatError("version 1 has 8 elements")
        _, device, count, boot0, seq0, sec0, bits, others = top[:8]
        if count > 10000:
            raise FormatError("%d records, more than 10000" % count)
        base = {"boot": boot0, "seq": seq0, "time": s64(sec0 * 1000)}
        rd = BitReader(bits)
        v2 = False
    else:
        raise VersionError("unknown wire format version %s" % version)
    if len(others) > count:
        raise FormatError("more other records than the count")
    other = read_others(others, base, count)
    slots = [i for i in range(count) if i not in other]
    positions = read_positions(rd, len(slots), slots, base, v2, version == 3)
    recs = []
    it = iter(positions)
    for i in range(count):
        if i in other:
            r = other[i]
        else:
            r = next(it)
            r["kind"] = 1
        r["device"] = device
        recs.append(r)
    return recs


# --- spec "JSON" -------------------------------------------------------------

KINDS = {1: "position", 2: "gps", 3: "radio", 4: "accel", 5: "battery", 6: "thermal", 7: "event",
         8: "link", 9: "exec"}
PRIORITIES = ["bulk", "normal", "high", "emergency"]
EVENTS = ["unknown", "emergency", "recording_start", "recording_stop", "docked", "undocked", "tamper",
          "battery_critical", "holster", "taser", "input", "status_message", "sds", "security", "gps_state",
          "radio_reset", "storage", "locate"]


def fixed(v, scale):
    """v / 10^scale as a Decimal (the JSON prints it exactly)."""
    return Decimal(v).scaleb(-scale)


def rfc3339(ms):
    import datetime
    t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(milliseconds=ms)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t.year, t.month, t.day, t.hour, t.minute, t.second,
                                                  t.microsecond // 1000)


def to_json(r):
    out = {"kind": KINDS.get(r["kind"], "kind(%d)" % r["kind"]), "device": r["device"], "boot": r["boot"],
           "seq": r["seq"], "time": rfc3339(r["time"])}
    k = r["kind"]
    if k == 1:
        f = r["flags"]
        out["lat"] = fixed(r["lat"], 7)
        out["lon"] = fixed(r["lon"], 7)
        out["alt"] = fixed(r["alt"], 2) if f & HAS_ALT else None
        out["speed"] = fixed(r["speed"], 2) if f & HAS_SPEED else None
        out["track"] = fixed(r["track"], 2) if f & HAS_TRACK else None
        out["mode"] = r["mode"]
        if f & HAS_SATS:
            out["sats"] = r["sats"]
        if f & HAS_HDOP:
            out["hdop"] = fixed(r["hdop"], 2)
        if f & HAS_EPH:
            out["eph"] = fixed(r["eph"], 2)
        if f & HAS_EPV:
            out["epv"] = fixed(r["epv"], 2)
        if r["coarsened"]:
            out["coarsened"] = r["coarsened"]
    elif k == 2:
        out["state"] = ["no_data", "no_fix", "fix"][r["state"]] if r["state"] < 3 else "gpsstate(%d)" % r["state"]
        for name in ("mode", "sats_in_view", "sats_used"):
            out[name] = r[name]
        for name in ("pdop", "hdop", "vdop"):
            out[name] = fixed(r[name], 2) if r[name] else None
        for name in ("sentences", "bad_frames", "noise_bytes"):
            out[name] = r[name]
    elif k == 3:
        p = r["profile"]
        out["profile"] = {1: "tetra", 2: "lte"}.get(p, "profile(%d)" % p)
        out["registered"] = r["registered"]
        out["reg_state"] = named(REG_STATES, r["registered"], "stat_%d")
        out["reg_source"] = named(REG_SOURCES, r["reg_source"], "source(%d)")
        out["online"] = bool(r["online"])
        out["rssi"] = r["rssi"]
        out["ber"] = r["ber"]
        if p != 1:
            out["rsrp"] = r["rsrp"]
            out["rsrq"] = fixed(r["rsrq"], 1)
        if p != 2:
            out["tetra_mode"] = r["tetra_mode"]
            out["identity"] = r["identity"]
            out["talkgroup"] = r["talkgroup"]
        if p != 1:
            out["operator"] = r["operator"]
            out["operator_format"] = named(OPERATOR_FORMATS, r["operator_format"], "format(%d)")
            out["access_tech"] = None if r["access_tech"] == 255 else r["access_tech"]
            for name in ("tac", "cell_id", "imei", "iccid"):
                out[name] = r[name]
            out["iccid_invalid"] = bool(r["iccid_invalid"])
        out["rejected_lines"] = r["rejected_lines"]
    elif k == 4:
        for name in ("x", "y", "z"):
            out[name] = fixed(r[name], 3)
    elif k == 5:
        out["capacity"] = r["capacity"]
        out["status"] = r["status"]
        out["voltage"] = fixed(r["voltage_mv"], 3)
        out["temp"] = fixed(r["temp_decic"], 1) if r["has_temp"] else None
    elif k == 6:
        out["zone"] = r["zone"]
        out["temp"] = fixed(r["milli_c"], 3)
    elif k == 7:
        t = r["type"]
        out["type"] = EVENTS[t] if t < len(EVENTS) else "event(%d)" % t
        for name in ("source", "name", "value", "text"):
            out[name] = r[name]
    elif k == 8:
        for name in ("iface", "source", "interval_ms", "rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "drops"):
            out[name] = r[name]
    elif k == 9:
        for name in ("path", "pid", "ppid", "uid", "parent_comm"):
            out[name] = r[name]
        out["allowed"] = bool(r["allowed"])
    p = r["priority"]
    out["priority"] = PRIORITIES[p] if p < 4 else "priority(%d)" % p
    return out


def device_of(topic):
    parts = topic.split("/")
    if len(parts) >= 5 and parts[0] == "kestrel" and parts[1] == "v1" and parts[2] and parts[3]:
        return parts[3]
    return ""


def check_vectors(path):
    with open(path) as fh:
        vectors = json.load(fh, parse_float=Decimal)["vectors"]
    failed = 0
    for v in vectors:
        name = v["name"]
        try:
            recs = [to_json(r) for r in decode_batch(bytes.fromhex(v["hex"]), device_of(v["topic"]))]
            if v.get("error"):
                print("FAIL %s: decoded, want error %r" % (name, v["error"]))
                failed += 1
                continue
        except FormatError as e:
            if v.get("error") and (v["error"] != "version" or isinstance(e, VersionError)):
                print("ok   %s (rejected: %s)" % (name, e))
                continue
            print("FAIL %s: %s" % (name, e))
            failed += 1
            continue
        want = v["records"]
        if recs != want:
            failed += 1
            print("FAIL %s" % name)
            for i in range(max(len(recs), len(want))):
                got = recs[i] if i < len(recs) else None
                exp = want[i] if i < len(want) else None
                if got != exp:
                    print("  record %d\n    got  %s\n    want %s" % (i, got, exp))
                    break
            continue
        print("ok   %s (%d records)" % (name, len(recs)))
    print("%d vectors, %d failed" % (len(vectors), failed))
    return 1 if failed else 0


def default(o):
    if isinstance(o, Decimal):
        return float(o)
    raise TypeError(o)


def main(argv):
    if len(argv) == 3 and argv[1] == "--vectors":
        return check_vectors(argv[2])
    if len(argv) == 3:
        device = device_of(argv[1])
        for r in decode_batch(bytes.fromhex(argv[2]), device):
            print(json.dumps(to_json(r), default=default))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
