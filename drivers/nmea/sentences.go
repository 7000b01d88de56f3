package nmea

import "math"

// Sentence tags. gpsd's cycle-end detector remembers, per sentence type,
// whether that type ended a cycle, so every type gpsd decodes needs its own
// tag, even the ones whose data a fix does not carry. Tag 0 is "not
// decoded" (unknown types, types gpsd lists without a decoder, sentences
// too short), which gpsd also feeds to the detector as tag 0.
const (
	tagNone = iota
	tagPGLOR
	tagPGRME
	tagPGRMF
	tagPGRMM
	tagPGRMZ
	tagACCURACY
	tagBWC
	tagDBT
	tagDTM
	tagGBS
	tagGGA
	tagGLL
	tagGNS
	tagGRS
	tagGSA
	tagGST
	tagGSV
	tagHDG
	tagHDT
	tagMWD
	tagMWV
	tagPASHR
	tagPMGNST
	tagPMTK001
	tagPMTK424
	tagPMTK705
	tagPQVERNO
	tagPRHS
	tagPSRFEPE
	tagPSTI030
	tagPSTI032
	tagPSTI033
	tagPSTI035
	tagPSTI036
	tagPTNTA
	tagPTNTHTM
	tagRMC
	tagTHS
	tagTXT
	tagVTG
	tagZDA
	numTags
)

// minFields is gpsd's minimum field count per tag ("nf").
var minFields = [numTags]int{
	tagPGLOR: 2, tagPGRME: 7, tagPGRMF: 15, tagPGRMM: 2, tagPGRMZ: 4,
	tagACCURACY: 1, tagBWC: 12, tagDBT: 7, tagDTM: 2, tagGBS: 7, tagGGA: 13,
	tagGLL: 7, tagGNS: 13, tagGRS: 4, tagGSA: 18, tagGST: 8, tagHDT: 1,
	tagPASHR: 3, tagPMGNST: 8, tagPMTK001: 3, tagPMTK424: 3, tagPMTK705: 4,
	tagPQVERNO: 5, tagPRHS: 2, tagPSRFEPE: 7, tagPSTI030: 16, tagPSTI032: 16,
	tagPSTI033: 27, tagPSTI035: 8, tagPSTI036: 2, tagPTNTA: 8, tagPTNTHTM: 9,
	tagRMC: 8, tagTXT: 5, tagVTG: 5, tagZDA: 4,
}

// lookup finds the tag of a sentence the way gpsd's table scan does:
// proprietary names match whole (many of them are listed only to be
// ignored), standard ones match on the three letters after any talker.
// It returns -1 for a listed sentence that gpsd does not decode.
func (d *Decoder) lookup() int {
	f0 := d.field[0]
	switch string(f0) {
	case "PGLOR":
		return tagPGLOR
	case "PGRME":
		return tagPGRME
	case "PGRMF":
		return tagPGRMF
	case "PGRMM":
		return tagPGRMM
	case "PGRMZ":
		return tagPGRMZ
	case "PGRMB", "PGRMC", "PGRMH", "PGRMI", "PGRMO", "PGRMT", "PGRMV":
		return -1
	case "ACCURACY":
		return tagACCURACY
	case "PASHR":
		return tagPASHR
	case "PMGNST":
		return tagPMGNST
	case "PMTK001":
		return tagPMTK001
	case "PMTK424":
		return tagPMTK424
	case "PMTK705":
		return tagPMTK705
	case "PQVERNO":
		return tagPQVERNO
	case "PRHS ":
		return tagPRHS
	case "PSRFEPE":
		return tagPSRFEPE
	case "PTNTA":
		return tagPTNTA
	case "PTNTHTM":
		return tagPTNTHTM
	case "PSTI":
		switch string(d.f(1)) {
		case "030":
			return tagPSTI030
		case "032":
			return tagPSTI032
		case "033":
			return tagPSTI033
		case "035":
			return tagPSTI035
		case "036":
			return tagPSTI036
		case "000", "001", "005":
			return -1
		}
		return tagNone
	case "PERDACK", "PERDCRD", "PERDCRG", "PERDCRJ", "PERDCRP", "PERDCRQ",
		"PERDCRW", "PERDMSG", "PERDSYS", "PJLTS", "PJLTV", "PMTK010",
		"PMTK011", "PMTKCHN", "PRWIZCH", "PSRF140", "PSRF150", "PSRF151",
		"PSRF152", "PSRF155", "PSTM", "PTFTTXT", "PTKM", "PTNLRHVR",
		"PTNLRPT", "PTNLRSVR", "PTNLRZD", "PUBX", "HWBIAS":
		return -1
	}
	if len(f0) != 5 {
		return tagNone
	}
	switch string(f0[2:]) {
	case "BWC":
		return tagBWC
	case "DBT":
		return tagDBT
	case "DTM":
		return tagDTM
	case "GBS":
		return tagGBS
	case "GGA":
		return tagGGA
	case "GLL":
		return tagGLL
	case "GNS":
		return tagGNS
	case "GRS":
		return tagGRS
	case "GSA":
		return tagGSA
	case "GST":
		return tagGST
	case "GSV":
		return tagGSV
	case "HDG":
		return tagHDG
	case "HDT":
		return tagHDT
	case "MWD":
		return tagMWD
	case "MWV":
		return tagMWV
	case "RMC":
		return tagRMC
	case "THS":
		return tagTHS
	case "TXT":
		return tagTXT
	case "VTG":
		return tagVTG
	case "ZDA":
		return tagZDA
	case "AAM", "ALM", "APB", "BOD", "DPT", "GLC", "MLA", "MSS", "MTW", "OSD",
		"QSM", "RLM", "RMB", "ROT", "RPM", "RSA", "RTE", "VBW", "VDO", "VDR",
		"VHW", "VLW", "XDR", "XTE":
		return -1
	}
	return tagNone
}

// f returns field i, empty past the end (gpsd points missing fields at "").
func (d *Decoder) f(i int) []byte {
	if i < d.count {
		return d.field[i]
	}
	return nil
}

func (d *Decoder) c(i, j int) byte {
	f := d.f(i)
	if j < len(f) {
		return f[j]
	}
	return 0
}

// dispatch splits a checked sentence body and runs gpsd's nmea_parse and
// the merge half of gpsd_poll on it.
func (d *Decoder) dispatch(body []byte) {
	// Split on commas; the checksum is already gone.
	n := 0
	start := 0
	for i, c := range body {
		if c == ',' {
			if n < maxFields {
				d.field[n] = body[start:i]
				n++
			}
			start = i + 1
		}
	}
	if n < maxFields {
		d.field[n] = body[start:]
		n++
	}
	d.count = n

	d.latchFrac = false
	d.gsxMore = false
	d.newdata.clear()

	mask := mOnline
	thistag := tagNone
	tag := d.lookup()
	switch {
	case tag < 0:
		d.stats.Ignored++
	case tag == tagNone:
		d.stats.Ignored++
	case d.count < minFields[tag]:
		d.stats.Ignored++
	default:
		mask = d.decode(tag)
		d.cycleContinue = tag == tagGLL || tag == tagACCURACY
		thistag = tag
	}

	f0 := d.field[0]
	if !(len(f0) >= 5 && string(f0[2:5]) == "GSV") {
		d.lastGSVTalker = 0
	}
	if !(len(f0) >= 5 && string(f0[2:5]) == "GSA") {
		d.lastGSATalker = 0
	}

	if mask&mTime != 0 {
		d.newdata.time = d.resolve()
	}

	// gpsd's end-of-cycle detector.
	lasttag := d.lasttag
	if d.gsxMore {
		// more GSV to come: not a cycle boundary
	} else if d.latchFrac {
		delta := d.thisFrac - d.lastFrac
		if delta < 0 {
			delta = -delta
		}
		if delta > 1e7 { // 0.01 s
			mask |= mClear
			if lasttag > 0 && !d.cycleEnders[lasttag] && !d.cycleContinue {
				d.cycleEnders[lasttag] = true
				d.reliable = true
			}
		}
	} else {
		if d.cycleEnders[lasttag] && mask&^mOnline != 0 {
			mask |= mReport
		}
		if d.cycleContinue {
			d.cycleEnders[lasttag] = false
			d.cycleEnders[thistag] = true
			d.reliable = true
		}
	}
	if (d.latchFrac || d.cycleContinue) && d.cycleEnders[thistag] && !d.gsxMore {
		mask |= mReport
	}
	if d.latchFrac {
		d.lasttag = thistag
	}

	// Don't downgrade a 3D fix because RMC cannot say 3D.
	if mask&mMode != 0 && d.fix.mode == mode3D && d.newdata.mode != modeNoFix &&
		(d.lastfix.hasAlt || d.oldfix.hasAlt) {
		d.newdata.mode = mode3D
	}

	// gpsd.c: without a reliable cycle end, every sentence that changes
	// position or mode is reported.
	if !d.reliable && mask&(mLatLon|mMode) != 0 {
		mask |= mReport
	}

	d.poll(mask)
}

// poll is the rest of gpsd_poll: clear on a new cycle, merge this
// sentence's data into the cycle's fix, sanity checks, and report.
func (d *Decoder) poll(mask uint32) {
	if mask&mClear != 0 {
		if mask&mDOP == 0 {
			d.pdop, d.hdop, d.vdop = -1, -1, -1
		}
		d.gstLat, d.gstLon, d.gstAlt = -1, -1, -1
		d.fix.clear()
	}
	nd := &d.newdata
	fx := &d.fix
	if mask&mTime != 0 {
		fx.time = nd.time
	}
	if mask&mHint != 0 {
		fx.hintTime = nd.hintTime
	}
	if mask&mLatLon != 0 {
		fx.lat, fx.lon, fx.hasPos = nd.lat, nd.lon, nd.hasPos
	}
	if mask&mMode != 0 {
		fx.mode = nd.mode
	}
	if mask&mStatus != 0 {
		fx.status = nd.status
	}
	if mask&mAlt != 0 && nd.hasAlt {
		fx.alt, fx.hasAlt, fx.altPGRMZ = nd.alt, true, false
	}
	// Garmin's PGRMZ altitude is whole feet; a standard sentence's
	// altitude in the same cycle is finer and wins.
	if mask&mAltZ != 0 && nd.hasAlt && (!fx.hasAlt || fx.altPGRMZ) {
		fx.alt, fx.hasAlt, fx.altPGRMZ = nd.alt, true, true
	}
	if mask&mTrack != 0 {
		fx.track, fx.hasTrack = nd.track, nd.hasTrack
	}
	if mask&mSpeed != 0 {
		fx.speed, fx.hasSpeed = nd.speed, nd.hasSpeed
	}
	if mask&mVel != 0 {
		fx.velN, fx.velE, fx.hasVel = nd.velN, nd.velE, nd.hasVel
	}

	// gpsd_error_model, the parts that change what a fix reports.
	if fx.time > 0 {
		dt := fx.time - d.lastfix.time
		if dt > 9 || dt < -9 {
			d.oldfix = d.lastfix
		}
	}
	if fx.hasPos && (fx.lat > 90e7 || fx.lat < -90e7 || fx.lon > 180e7 || fx.lon < -180e7) {
		fx.hasPos = false
	}
	if fx.hasSpeed && fx.speed > 999990 {
		fx.hasSpeed = false
	}
	if fx.hasVel {
		if !fx.hasSpeed {
			fx.speed = int64(math.Round(math.Hypot(fx.velN, fx.velE) * 100))
			fx.hasSpeed = true
		}
		if !fx.hasTrack {
			fx.track = int64(math.Round(math.Atan2(fx.velE, fx.velN) * 180 / math.Pi * 100))
			fx.hasTrack = true
		}
	}
	if fx.hasTrack {
		if fx.track < 0 {
			fx.track += 36000
		} else if fx.track >= 36000 {
			fx.track -= 36000
		}
		if fx.track < 0 || fx.track >= 36000 {
			fx.hasTrack = false
		}
	}
	if fx.time > 0 {
		d.lastfix = *fx
	}
	if mask&mReport != 0 {
		d.report()
	}
}

// decode runs one sentence's decoder and returns gpsd's mask for it.
func (d *Decoder) decode(tag int) uint32 {
	nd := &d.newdata
	switch tag {
	case tagGGA:
		return d.gga()
	case tagRMC:
		return d.rmc()
	case tagGLL:
		return d.gll()
	case tagGNS:
		return d.gns()
	case tagGSA:
		return d.gsa()
	case tagGSV:
		return d.gsv()
	case tagVTG:
		return d.vtg()
	case tagZDA:
		return d.zda()
	case tagGST:
		return d.gst()
	case tagPGRMZ:
		mask := mOnline
		if d.c(2, 0) == 'f' && len(d.f(1)) > 0 {
			nd.alt = int64(math.Round(float64(atoi(d.f(1))) * 30.48))
			nd.hasAlt = true
			mask |= mAltZ
		}
		switch d.c(3, 0) {
		case '1':
			nd.mode = modeNoFix
			mask |= mMode
		case '2':
			nd.mode = mode2D
			mask |= mMode
		case '3':
			nd.mode = mode3D
			mask |= mMode
		}
		return mask
	case tagPMGNST:
		m := atoi(d.f(3))
		nd.mode = modeNoFix
		if d.c(4, 0) == 'T' {
			switch m {
			case 2:
				nd.mode = mode2D
			case 3:
				nd.mode = mode3D
			}
		}
		return mOnline | mMode
	case tagPGRME:
		if d.c(2, 0) == 'M' && d.c(4, 0) == 'M' && d.c(6, 0) == 'M' {
			return mErr
		}
		return mOnline
	case tagPGRMF:
		return d.pgrmf()
	case tagBWC:
		mask := mOnline
		if len(d.f(1)) > 0 && d.mergeHHMMSS(d.f(1)) && d.year != 0 {
			mask = mTime
		}
		if d.count >= 12 {
			nd.status = 1
		}
		return mask
	case tagDBT:
		if len(d.f(3)) > 0 || len(d.f(1)) > 0 || len(d.f(5)) > 0 {
			return mOnline | mOther
		}
		return mOnline
	case tagGBS:
		d.registerFrac(d.f(1))
		f1 := d.f(1)
		if len(f1) >= 6 && hhmmssOK(f1) && d.hour == dd(f1) && d.min == dd(f1[2:]) && d.sec == dd(f1[4:]) {
			return mErr
		}
		return mOnline
	case tagGRS:
		if len(d.f(1)) > 0 {
			d.mergeHHMMSS(d.f(1))
		}
		return mOnline
	case tagHDG:
		if len(d.f(1)) == 0 {
			return mOnline
		}
		h, ok := scaled(d.f(1), 2)
		if ok && (h < 0 || h > 36000) {
			return mOnline
		}
		dev, _ := scaled(d.f(2), 2)
		if dev < 0 || dev > 36000 {
			return mOnline
		}
		return mOnline | mOther
	case tagHDT:
		if len(d.f(1)) == 0 {
			return mOnline
		}
		h, _ := scaled(d.f(1), 2)
		if h < 0 || h > 36000 {
			return mOnline
		}
		return mOnline | mOther
	case tagMWD, tagPTNTHTM:
		return mOnline | mOther
	case tagMWV:
		if d.c(2, 0) == 'R' && d.c(4, 0) == 'N' && d.c(5, 0) == 'A' {
			return mOnline | mOther
		}
		return mOnline
	case tagPTNTA:
		if string(d.f(3)) == "T4" {
			return mOnline | mOther
		}
		return mOnline
	case tagPSRFEPE:
		mask := mStatus
		if len(d.f(1)) > 0 && d.mergeHHMMSS(d.f(1)) {
			d.registerFrac(d.f(1))
			if d.year != 0 {
				mask |= mTime
			}
		}
		if d.c(2, 0) != 'A' {
			return mask
		}
		if len(d.f(3)) > 0 {
			if v, ok := scaled(d.f(3), 2); ok {
				d.hdop = v
			}
			mask |= mDOP
		}
		if len(d.f(4)) > 0 || len(d.f(5)) > 0 {
			mask |= mErr
		}
		return mask
	case tagPASHR:
		return d.pashr()
	case tagPSTI030:
		return d.psti030()
	case tagPSTI032:
		if d.c(4, 0) != 'A' {
			return mOnline
		}
		mask := mOnline
		if len(d.f(2)) > 0 && len(d.f(3)) > 0 && d.mergeHHMMSS(d.f(2)) && d.mergeDDMMYY(d.f(3)) {
			mask |= mTime
			d.registerFrac(d.f(2))
		}
		return mask
	case tagPSTI033:
		if d.c(4, 0) != '2' || (d.c(5, 0) != 'B' && d.c(5, 0) != 'R') {
			return mOnline
		}
		mask := mOnline
		if len(d.f(2)) > 0 && len(d.f(3)) > 0 && d.mergeHHMMSS(d.f(2)) && d.mergeDDMMYY(d.f(3)) {
			mask |= mTime
			d.registerFrac(d.f(2))
		}
		return mask
	case tagPSTI035, tagPSTI036:
		mask := mOnline
		if len(d.f(2)) > 0 && len(d.f(3)) > 0 && d.mergeHHMMSS(d.f(2)) && d.mergeDDMMYY(d.f(3)) {
			mask |= mTime
			d.registerFrac(d.f(2))
		}
		if tag == tagPSTI035 && d.c(4, 0) == 'A' {
			mask |= mOther
		}
		if tag == tagPSTI036 && len(d.f(7)) > 0 && d.c(7, 0) != 'N' {
			mask |= mOther
		}
		return mask
	}
	// PGLOR, PGRMM, ACCURACY, DTM, PMTK*, PQVERNO, PRHS, THS, TXT
	return mOnline
}

func (d *Decoder) gga() uint32 {
	nd := &d.newdata
	mask := mOnline
	lastLast := d.lastGGATalker
	d.lastGGATalker = d.c(0, 1)
	fixq := -1
	if len(d.f(6)) > 0 {
		fixq = atoi(d.f(6))
	}
	status := int8(-1)
	switch fixq {
	case 0:
		status = 0
		if len(d.f(1)) == 0 {
			d.year, d.mon, d.mday, d.hour, d.min, d.sec = 0, 0, 0, 0, 0, 0
			d.reliable = false
			mask |= mReport | mTime
		}
	case 1, 2, 3, 4, 5, 6, 7, 8:
		status = int8(fixq)
	}
	if status >= 0 {
		nd.status = status
		mask = mStatus // gpsd assigns here, dropping the bits above
	}
	t := d.f(1)
	if lastLast != 0 && lastLast != d.lastGGATalker {
		d.latchMode = false
	} else {
		tt := t
		if len(tt) > len(d.lastGGATime)-1 {
			tt = tt[:len(d.lastGGATime)-1]
		}
		d.latchMode = string(tt) == string(d.lastGGATime[:d.lastGGATimeN])
	}
	if d.latchMode {
		nd.status = 0
		nd.mode = modeNoFix
		mask |= mMode | mStatus
	} else {
		d.lastGGATimeN = copy(d.lastGGATime[:len(d.lastGGATime)-1], t)
	}
	satsVisible := atoi(d.f(7))
	if len(d.f(7)) > 0 {
		d.ggaSats = satsVisible
	}
	if len(t) > 0 && d.mergeHHMMSS(t) {
		d.registerFrac(t)
		if d.year != 0 {
			mask |= mTime
		} else if d.hintDay >= 0 || d.opts.Now != nil {
			nd.hintTime = d.hintTime()
			mask |= mHint
		}
	}
	if lat, ok := latlon(d.f(2), d.f(3)); ok {
		if lon, ok := latlon(d.f(4), d.f(5)); ok {
			nd.lat, nd.lon, nd.hasPos = lat, lon, true
		}
	}
	if nd.hasPos {
		nd.mode = mode2D
		mask |= mLatLon
		if len(d.f(9)) > 0 {
			if v, ok := scaled(d.f(9), 2); ok {
				nd.alt, nd.hasAlt = v, true
			}
			mask |= mAlt
			if satsVisible >= 4 {
				nd.mode = mode3D
			}
		}
		if satsVisible < 3 {
			nd.mode = modeNoFix
		}
	} else {
		nd.mode = modeNoFix
	}
	mask |= mMode
	if len(d.f(8)) > 0 {
		if v, ok := scaled(d.f(8), 2); ok && v < 9900 {
			d.hdop = v
			mask |= mDOP
		}
	}
	return mask
}

// mode1Status maps an FAA mode letter to gpsd's status (only whether it is
// a fix matters here).
func faaStatus(c byte) int8 {
	switch c {
	case 0, 'C', 'N', 'U':
		return 0
	}
	return 1
}

func (d *Decoder) rmc() uint32 {
	nd := &d.newdata
	mask := mOnline
	switch d.c(2, 0) {
	case 'A', 'D':
		if len(d.f(1)) > 0 && d.count > 9 && len(d.f(9)) > 0 {
			if d.mergeHHMMSS(d.f(1)) && d.mergeDDMMYY(d.f(9)) {
				mask |= mTime
				d.registerFrac(d.f(1))
			}
		}
		var ok bool
		if nd.lat, ok = latlon(d.f(3), d.f(4)); ok {
			nd.lon, ok = latlon(d.f(5), d.f(6))
		}
		status := int8(1)
		if ok {
			nd.hasPos = true
			mask |= mLatLon
			if d.lastfix.mode <= mode2D {
				nd.mode = mode2D
				mask |= mMode
			} else if d.lastfix.mode == mode3D {
				nd.mode = mode3D
				mask |= mMode
			}
		} else {
			status = 0
			nd.mode = modeNoFix
			mask |= mMode
		}
		if len(d.f(7)) > 0 {
			nd.speed, nd.hasSpeed = knotsToCms(d.f(7))
			mask |= mSpeed
		}
		if len(d.f(8)) > 0 {
			var t int64
			t, nd.hasTrack = scaled(d.f(8), 2)
			nd.track = t
			mask |= mTrack
		}
		if d.count >= 12 {
			status = faaStatus(d.c(12, 0))
		}
		if d.nUsed > 3 {
			nd.mode = mode3D
			mask |= mMode
		} else if d.fix.hasAlt {
			nd.mode = mode3D
			mask |= mMode
		}
		nd.status = status
		mask |= mStatus
	default:
		nd.mode = modeNoFix
		if len(d.f(1)) == 0 || len(d.f(9)) == 0 {
			d.year, d.mon, d.mday, d.hour, d.min, d.sec = 0, 0, 0, 0, 0, 0
			d.reliable = false
			mask |= mReport | mTime
		}
		mask |= mStatus | mMode
	}
	return mask
}

func (d *Decoder) gll() uint32 {
	nd := &d.newdata
	mask := mOnline
	if t := d.f(5); len(t) > 0 && d.mergeHHMMSS(t) {
		d.registerFrac(t)
		if d.year != 0 {
			mask = mTime
		} else if d.hintDay >= 0 || d.opts.Now != nil {
			nd.hintTime = d.hintTime()
			mask |= mHint
		}
	}
	st := d.c(6, 0)
	switch {
	case st == 0 || st == 'V':
		nd.status = 0
		nd.mode = modeNoFix
	case st == 'A' && (d.count < 8 || d.c(7, 0) != 'N') && d.latlonAt(1):
		mask |= mLatLon
		status := int8(1)
		if d.count >= 8 {
			status = faaStatus(d.c(7, 0))
		}
		switch {
		case d.fix.hasAlt:
			nd.mode = mode3D
		case d.nUsed > 3:
			nd.mode = mode3D
		case d.fix.mode < mode2D || !d.oldfix.hasAlt:
			nd.mode = mode2D
		}
		nd.status = status
	default:
		nd.status = 0
		nd.mode = modeNoFix
	}
	return mask | mStatus | mMode
}

// latlonAt decodes the four lat/lon fields starting at i into newdata.
func (d *Decoder) latlonAt(i int) bool {
	lat, ok := latlon(d.f(i), d.f(i+1))
	if !ok {
		return false
	}
	lon, ok := latlon(d.f(i+2), d.f(i+3))
	if !ok {
		return false
	}
	d.newdata.lat, d.newdata.lon, d.newdata.hasPos = lat, lon, true
	return true
}

func (d *Decoder) gns() uint32 {
	nd := &d.newdata
	mask := mOnline
	if t := d.f(1); len(t) > 0 && d.mergeHHMMSS(t) {
		d.registerFrac(t)
		if d.year != 0 {
			mask = mTime
		} else if d.hintDay >= 0 || d.opts.Now != nil {
			nd.hintTime = d.hintTime()
			mask |= mHint
		}
	}
	if m := d.c(6, 0); m == 0 || m == 'N' {
		nd.mode = modeNoFix
		return mask | mMode
	}
	if ns := d.c(13, 0); ns == 'U' || ns == 'V' {
		return mask
	}
	used := atoi(d.f(7))
	if d.latlonAt(2) {
		mask |= mLatLon
		nd.mode = mode2D
		if len(d.f(9)) > 0 {
			if v, ok := scaled(d.f(9), 2); ok {
				nd.alt, nd.hasAlt = v, true
				mask |= mAlt
				if used > 3 {
					nd.mode = mode3D
				}
			}
		}
	} else {
		nd.mode = modeNoFix
		mask |= mMode
	}
	if len(d.f(8)) > 0 {
		if v, ok := scaled(d.f(8), 2); ok {
			d.hdop = v
		}
		mask |= mDOP
	}
	nd.status = faaStatus(d.c(6, 0))
	return mask | mMode | mStatus
}

func (d *Decoder) vtg() uint32 {
	nd := &d.newdata
	if len(d.f(1)) == 0 || len(d.f(5)) == 0 {
		return mOnline
	}
	if d.count > 9 {
		if m := d.c(9, 0); m == 'E' || m == 'N' {
			return mOnline
		}
	}
	nd.track, nd.hasTrack = scaled(d.f(1), 2)
	nd.speed, nd.hasSpeed = knotsToCms(d.f(5))
	return mOnline | mTrack | mSpeed
}

func (d *Decoder) zda() uint32 {
	if len(d.f(1)) == 0 || len(d.f(2)) == 0 || len(d.f(3)) == 0 || len(d.f(4)) == 0 {
		return mOnline
	}
	if !d.mergeHHMMSS(d.f(1)) {
		return mOnline
	}
	year := atoi(d.f(4))
	mon := atoi(d.f(3))
	mday := atoi(d.f(2))
	if year < 1900 || year > 2200 || mon < 1 || mon > 12 || mday < 1 || mday > 31 {
		return mOnline
	}
	d.century = year - year%100
	d.year, d.mon, d.mday = year, mon, mday
	d.registerFrac(d.f(1))
	return mTime
}

func (d *Decoder) gst() uint32 {
	// Error estimates in metres, 1 sigma: latitude, longitude, altitude.
	if v, ok := scaled(d.f(6), 2); ok && v >= 0 {
		d.gstLat = v
	}
	if v, ok := scaled(d.f(7), 2); ok && v >= 0 {
		d.gstLon = v
	}
	if v, ok := scaled(d.f(8), 2); ok && v >= 0 {
		d.gstAlt = v
	}
	return mOnline | mGST
}

// constellation bits for the seen-GSA/GSV sets (everything but GP).
func talkerBit(t byte) uint8 {
	switch t {
	case 'A':
		return 1
	case 'B', 'D':
		return 2
	case 'I':
		return 4
	case 'L':
		return 8
	case 'N':
		return 16
	case 'Q', 'Z':
		return 32
	}
	return 0
}

func talkerGNSS(t byte) int {
	switch t {
	case 'A':
		return 3
	case 'B', 'D':
		return 4
	case 'I':
		return 6
	case 'L':
		return 2
	case 'Q', 'Z':
		return 5
	}
	return 0
}

func (d *Decoder) gsa() uint32 {
	nd := &d.newdata
	mask := mOnline
	talker := d.c(0, 1)
	lastLast := d.lastGSATalker
	switch {
	case d.count < 18:
	case d.latchMode:
	default:
		nd.mode = int8(atoi(d.f(2)))
		if d.c(2, 0) != 'E' {
			mask = mMode
		}
		if d.count <= 19 {
			if len(d.f(15)) > 0 {
				if v, ok := scaled(d.f(15), 2); ok && v < 9900 {
					d.pdop = v
					mask |= mDOP
				}
			}
			if len(d.f(16)) > 0 {
				if v, ok := scaled(d.f(16), 2); ok && v < 9900 {
					d.hdop = v
					mask |= mDOP
				}
			}
			if len(d.f(17)) > 0 {
				if v, ok := scaled(d.f(17), 2); ok && v < 9900 {
					d.vdop = v
					mask |= mDOP
				}
			}
		}
		if d.lastGSATalker == 0 || (talker == d.lastGSATalker && talker != 'N') {
			d.nUsed = 0
		}
		d.lastGSATalker = talker
		if talker != 'P' {
			d.seenGSA |= talkerBit(talker)
		}
		gnss := talkerGNSS(talker)
		for i := 0; i < d.count-6; i++ {
			n := atoi(d.f(i + 3))
			if n < 1 {
				continue
			}
			prn := nmeaPRN(d.field[0], n, gnss)
			if prn > 0 {
				if d.nUsed >= maxChannels {
					break
				}
				d.satsUsed[d.nUsed] = prn
				d.nUsed++
			}
		}
		mask |= mUsed
	}
	if d.seenGSA != 0 && talker == 'P' {
		mask = mOnline
	} else if lastLast != 'N' && talker == 'N' {
		mask = mOnline | mMode
	}
	return mask
}

// nmeaPRN is a reduced gpsd nmeaid_to_prn: enough to match GSV satellites
// against GSA's used list.
func nmeaPRN(tag []byte, n, gnss int) int {
	if n < 1 {
		return 0
	}
	switch gnss {
	case 2:
		if n > 64 {
			return n
		}
		return 64 + n
	case 3:
		return 300 + n%100
	case 4:
		return 400 + n%100
	case 5:
		return 192 + n%100
	case 6:
		return 500 + n
	}
	if n <= 32 && len(tag) >= 2 {
		switch {
		case tag[0] == 'G' && tag[1] == 'A':
			return 300 + n
		case tag[0] == 'G' && tag[1] == 'B', tag[0] == 'B' && tag[1] == 'D', tag[0] == 'P' && tag[1] == 'Q':
			return 400 + n
		case tag[0] == 'G' && tag[1] == 'I':
			return 500 + n
		case tag[0] == 'G' && tag[1] == 'L':
			return 64 + n
		case tag[0] == 'G' && tag[1] == 'Q', tag[0] == 'Q' && tag[1] == 'Z':
			return 192 + n
		}
	}
	return n
}

func (d *Decoder) zeroSats() {
	d.nVisible = 0
}

func (d *Decoder) gsv() uint32 {
	if d.count <= 3 {
		d.zeroSats()
		return mOnline
	}
	switch d.count % 4 {
	case 0, 1:
	default:
		d.zeroSats()
		return mOnline
	}
	talker := d.c(0, 1)
	sigid := 0
	if d.count%4 == 1 {
		// gpsd maps the NMEA 4.10 signal id to u-blox's; only 2, 3, 5
		// and 6 map to non-zero ids.
		switch atoi(d.f(d.count - 1)) {
		case 2, 3, 5, 6:
			sigid = 1
		}
	}
	d.gsvAwait = atoi(d.f(1))
	d.gsvPart = atoi(d.f(2))
	if d.gsvPart < 1 {
		d.zeroSats()
		return mOnline
	}
	if d.gsvPart == 1 && (d.lastGSVTalker == 0 || (talker == 'P' && sigid == 0)) {
		d.zeroSats()
	}
	d.lastGSVTalker = talker
	if talker != 'P' {
		d.seenGSV |= talkerBit(talker)
	}
	gnss := talkerGNSS(talker)
	for fld := 4; fld < d.count/4*4; {
		if d.nVisible >= maxChannels {
			d.zeroSats()
			break
		}
		id := atoi(d.f(fld))
		fld++
		if id == 0 {
			continue
		}
		s := &d.sky[d.nVisible]
		s.prn = nmeaPRN(d.field[0], id, gnss)
		fld++ // elevation
		s.az = atoi(d.f(fld))
		fld++
		s.ss = atoi(d.f(fld))
		fld++
		s.used = false
		if s.prn > 0 && s.ss > 0 {
			for k := 0; k < d.nUsed; k++ {
				if d.satsUsed[k] == s.prn {
					s.used = true
					break
				}
			}
		}
		d.nVisible++
	}
	if d.gsvPart < d.gsvAwait {
		d.gsxMore = true
		return mOnline
	}
	d.gsxMore = false
	sane := false
	for k := 0; k < d.nVisible; k++ {
		if d.sky[k].az != 0 {
			sane = true
			break
		}
	}
	if !sane {
		d.zeroSats()
		return mOnline
	}
	if d.seenGSV != 0 && talker == 'P' {
		return mOnline
	}
	return mSat
}

func (d *Decoder) pgrmf() uint32 {
	nd := &d.newdata
	mask := mOnline
	if d.mergeHHMMSS(d.f(4)) && d.mergeDDMMYY(d.f(3)) {
		mask |= mTime
	}
	if d.c(10, 0) != 'A' {
		return mask
	}
	if d.latlonAt(6) {
		mask |= mLatLon
	}
	switch d.c(11, 0) {
	case '0':
		nd.mode = modeNoFix
		mask |= mMode
	case '1':
		nd.mode = mode2D
		mask |= mMode
	case '2':
		nd.mode = mode3D
		mask |= mMode
	}
	if v, ok := scaled(d.f(12), 2); ok { // km/h
		nd.speed, nd.hasSpeed = (v*100+180)/360, true
	} else {
		nd.speed, nd.hasSpeed = 0, true
	}
	nd.track, _ = scaled(d.f(13), 2)
	nd.hasTrack = true
	mask |= mSpeed | mTrack
	if len(d.f(14)) > 0 {
		if v, ok := scaled(d.f(14), 2); ok {
			d.pdop = v
		}
		mask |= mDOP
	}
	return mask
}

func (d *Decoder) pashr() uint32 {
	nd := &d.newdata
	switch string(d.f(1)) {
	case "ACK", "MCA", "NAK", "PBN", "RID":
		return mOnline
	case "POS":
		mask := mOnline | mMode | mStatus | mClear
		if len(d.f(2)) == 0 {
			nd.status = 0
			nd.mode = modeNoFix
			return mask
		}
		nd.mode = mode3D
		nd.status = 1
		if d.mergeHHMMSS(d.f(4)) {
			d.registerFrac(d.f(4))
			mask |= mTime
		}
		if d.latlonAt(5) {
			mask |= mLatLon
		}
		nd.track, nd.hasTrack = scaled(d.f(11), 2)
		if v, ok := scaled(d.f(12), 2); ok {
			nd.speed, nd.hasSpeed = (v*100+180)/360, true
		}
		return mask | mSpeed | mTrack
	case "SAT":
		return mOnline | mSat | mUsed
	}
	if string(d.f(3)) == "T" {
		d.mergeHHMMSS(d.f(1))
	}
	return mOnline
}

func (d *Decoder) psti030() uint32 {
	nd := &d.newdata
	mask := mOnline
	if d.c(3, 0) == 'V' || d.c(13, 0) == 'N' {
		nd.status = 0
		nd.mode = modeNoFix
		return mask | mMode | mStatus
	}
	if d.c(3, 0) != 'A' {
		return mask
	}
	if len(d.f(2)) > 0 && len(d.f(12)) > 0 && d.mergeHHMMSS(d.f(2)) && d.mergeDDMMYY(d.f(12)) {
		mask |= mTime
		d.registerFrac(d.f(2))
	}
	if d.latlonAt(4) {
		nd.mode = mode2D
		mask |= mLatLon
		if len(d.f(8)) > 0 {
			if v, ok := scaled(d.f(8), 2); ok {
				nd.alt, nd.hasAlt = v, true
			}
			mask |= mAlt
			nd.mode = mode3D
		}
		mask |= mMode
	}
	e, ok1 := scaled(d.f(9), 3)
	n, ok2 := scaled(d.f(10), 3)
	if !ok1 {
		e = 0
	}
	if !ok2 {
		n = 0
	}
	nd.velE, nd.velN, nd.hasVel = float64(e)/1000, float64(n)/1000, true
	nd.status = faaStatus(d.c(13, 0))
	return mask | mVel | mStatus
}
