// Package delta owns the binary delta format kestrel-bsdiff/1
// (fleet.DeltaFormat): Colin Percival's bsdiff algorithm ("Naive
// Differences of Executable Code", 2003) with its three streams compressed
// by zstd (RFC 8878, github.com/klauspost/compress/zstd) instead of bzip2.
//
// A patch is
//
//	offset size  field
//	0      8     magic "KBSDIF01"
//	8      8     size of the old (base) file, uint64 little-endian
//	16     8     size of the new file, uint64 little-endian
//	24     8     compressed length of the control stream, uint64 LE
//	32     8     compressed length of the diff stream, uint64 LE
//	40     ...   control stream, diff stream, extra stream (to the end),
//	             each one zstd frame
//
// The diff stream, before compression, is in zero-run form: pairs of
// uvarints (zeros, n) each followed by n literal bytes, which expand to
// that many zero bytes then the literals (bsdiff's diff bytes are mostly
// zero; this form compresses about a third smaller under zstd). A pair
// (0, 0) is malformed.
//
// The control stream is a sequence of triples (add, copy, seek) of signed
// 64-bit little-endian integers. For each, the patcher adds the next add
// bytes of the diff stream bytewise (mod 256) to add bytes of the old file
// at the old position and appends them, appends the next copy bytes of the
// extra stream, then moves the old position by seek. Only the first triple
// may have add = copy = 0. Every add must lie inside the old file and the
// output must end exactly at the new size, with every stream consumed.
//
// Diff takes its suffix array from the standard library (index/suffixarray,
// SA-IS); the matches are checked byte by byte, so the array only steers
// the search and a wrong one could cost size, never correctness. Patch is a
// parser of outside input: its output is bounded by a caller's maxSize,
// its memory by the old and new sizes, and it never panics
// (FuzzPatch). The device checks the new file's SHA-256 against the signed
// release manifest; this package checks structure only.
package delta
