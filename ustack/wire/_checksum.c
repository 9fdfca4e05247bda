/*
 * ustack.wire._checksum: the Internet checksum (RFC 1071) and its incremental update (RFC 1624).
 *
 * Theory of operation. The one's-complement sum of 16-bit words is the sum modulo 0xFFFF,
 * represented as 1..0xFFFF unless every word is zero (then 0). Because 2**16, 2**32 and 2**64 are
 * all 1 modulo 0xFFFF, we may add the data as wider words -- 32- or 64-bit -- as long as no carry
 * is ever lost (every carry out of the top is added back in, "end-around"), and fold the wide
 * total to 16 bits at the end. We add the words in the machine's own byte order and swap the
 * folded result once (RFC 1071 section 2(B): the sum is byte-order independent up to a swap).
 * A trailing odd byte is the high byte of a zero-padded word in network order, which is exactly
 * what reading the buffer as if it were zero-padded to a multiple of 8 bytes gives.
 *
 * Two kernels compute the native-order sum of a buffer:
 *   - portable: four independent 64-bit sums, each with a count of the carries out of its top
 *     bit (compilers turn the compare into an add-with-carry); plain C for any target.
 *   - avx2 (x86-64 only): 32-byte loads added into 64-bit lanes, plus a second set of lanes that
 *     adds each word's high 32 bits; together they recover every lost carry exactly (see
 *     sum_avx2). Compiled with a target attribute and chosen at import with
 *     __builtin_cpu_supports, so the rest of the file needs no -mavx2.
 * Kernels return a 64-bit value that is congruent to the sum modulo 2**64 - 1 and zero only if
 * the data is all zero; both properties survive folding, so both kernels, and the pure-Python
 * fallback, produce the same canonical 16-bit result bit for bit.
 *
 * Calls are METH_FASTCALL, bytes objects are read in place and everything else through the
 * buffer protocol (PyBUF_SIMPLE): no copies, any alignment, any length. The GIL is held
 * throughout: a 64 KiB buffer takes under a microsecond.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* -DUSTACK_NO_AVX2 builds what every non-x86 target gets: the portable kernel alone. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(USTACK_NO_AVX2)
#define USTACK_HAVE_AVX2 1
#include <immintrin.h>
#else
#define USTACK_HAVE_AVX2 0
#endif

/* Kernels are fed at most this much at a time so their lane accumulators cannot overflow (a
 * 64-bit lane adding 32-bit values has room for 2**32 of them; 1 GiB is 2**27 words). */
#define BLOCK ((size_t)1 << 30)

/* Below this many bytes the AVX2 kernel's set-up (aligning, combining lanes) costs more than its
 * wide loads save, and plain 64-bit words are faster (measured). */
#define SHORT 128

#define U16_MAX 0xFFFFu
#define U32_MAX 0xFFFFFFFFu
#define U64_MAX 0xFFFFFFFFFFFFFFFFull
/* RFC 9293 3.1: the pseudo-header's TCP length is a 16-bit field. */
#define TCP_MAX_LENGTH 0xFFFF
#define PROTO_TCP 6
/* 2**128 - 1, for the range error of a 128-bit argument (printf has no 128-bit conversion). */
#define U128_MAX_DECIMAL "340282366920938463463374607431768211455"

typedef uint64_t (*sum_fn)(const unsigned char *p, size_t n);

static inline uint64_t
load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* a + b with the carry out of bit 63 added back in: a one's-complement add modulo 2**64 - 1.
 * The result is zero only if both inputs are. */
static inline uint64_t
add_end_around(uint64_t a, uint64_t b)
{
    uint64_t s = a + b;
    return s + (s < b);
}

static inline uint32_t
fold64(uint64_t s)
{
    s = (s & U32_MAX) + (s >> 32);
    s = (s & U32_MAX) + (s >> 32);
    s = (s & U16_MAX) + (s >> 16);
    s = (s & U16_MAX) + (s >> 16);
    return (uint32_t)s;
}

/* The bytes of a short piece (n < 8) as one native word of the zero-padded buffer. Three ways to
 * read them: byte by byte (tiny buffers), or with one 8-byte load that may reach beyond the piece
 * but not beyond the buffer -- backwards from its end, or forwards from its start -- then
 * shifting or masking away the bytes that belong to other pieces. */
static inline uint64_t
piece_bytes(const unsigned char *p, size_t n)
{
    unsigned char tmp[8] = {0};
    for (size_t i = 0; i < n; i++) {
        tmp[i] = p[i];
    }
    return load64(tmp);
}

static inline uint64_t
piece_from_end(const unsigned char *p, size_t n)
{
    uint64_t w = load64(p + n - 8);
#if PY_BIG_ENDIAN
    return w << (8 * (8 - n));
#else
    return w >> (8 * (8 - n));
#endif
}

static inline uint64_t
piece_from_start(const unsigned char *p, size_t n)
{
    uint64_t w = load64(p);
#if PY_BIG_ENDIAN
    return w & ~(U64_MAX >> (8 * n));
#else
    return w & ((UINT64_C(1) << (8 * n)) - 1);
#endif
}

/* Adds p[0:n] to s a word at a time; the last piece is read backwards, so the 8 bytes before
 * p + n must be readable (the caller has summed at least 8 bytes before p, or n >= 8). */
static inline uint64_t
sum_tail(const unsigned char *p, size_t n, uint64_t s)
{
    const unsigned char *end = p + n;
    while (n >= 8) {
        s = add_end_around(s, load64(p));
        p += 8;
        n -= 8;
    }
    if (n) {
        s = add_end_around(s, piece_from_end(end - n, n));
    }
    return s;
}

static uint64_t
sum_portable(const unsigned char *p, size_t n)
{
    if (n < 8) {
        return piece_bytes(p, n);
    }
    /* Four independent sums of 64-bit words, each with its own count of the carries out of bit
     * 63; sum + carries is the end-around total. Compilers turn each compare into an
     * add-with-carry and the four chains run in parallel. */
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    while (n >= 32) {
        uint64_t w0 = load64(p), w1 = load64(p + 8), w2 = load64(p + 16), w3 = load64(p + 24);
        s0 += w0;
        c0 += s0 < w0;
        s1 += w1;
        c1 += s1 < w1;
        s2 += w2;
        c2 += s2 < w2;
        s3 += w3;
        c3 += s3 < w3;
        p += 32;
        n -= 32;
    }
    uint64_t s = add_end_around(add_end_around(s0, s1), add_end_around(s2, s3));
    return sum_tail(p, n, add_end_around(s, c0 + c1 + c2 + c3));
}

/* The sum of a piece that starts `shift` bytes into the caller's buffer, re-weighted to the
 * caller's byte positions: every byte's weight is multiplied by 2**(8 * shift) modulo
 * 2**64 - 1, which is a rotation (the other way round on big-endian machines). */
static inline uint64_t
rephase(uint64_t s, size_t shift)
{
    unsigned r = (unsigned)(8 * shift) & 63;
    if (r == 0) {
        return s;
    }
#if PY_BIG_ENDIAN
    return (s >> r) | (s << (64 - r));
#else
    return (s << r) | (s >> (64 - r));
#endif
}

#if USTACK_HAVE_AVX2
/* Keeps a loaded vector in a register: left alone, compilers fold the load into both the add
 * and the shift and read every byte twice, which costs a fifth of the speed. */
#define IN_REGISTER(x) __asm__("" : "+x"(x))

/* Lane by lane, r adds whole 64-bit words (wrapping modulo 2**64) and h adds their high 32-bit
 * halves (exact). Writing each word as lo + 2**32 * hi, the exact sum of the low halves is
 * r - (h << 32) modulo 2**64, and it is below 2**64 within a BLOCK, so it is recovered exactly;
 * lo + hi is then congruent to the data modulo 0xFFFF. That costs one shift and two adds per
 * 32 bytes. Loads are 32-byte aligned (split loads cost up to a quarter of the speed): the
 * unaligned head is summed on its own and the body re-weighted with rephase(). */
__attribute__((target("avx2"))) static uint64_t
sum_avx2(const unsigned char *p, size_t n)
{
    if (n < SHORT) {
        return sum_portable(p, n); /* the last piece of a huge buffer; also keeps head < n */
    }
    size_t head = (size_t)(-(uintptr_t)p) & 31;
    uint64_t s_head = 0;
    for (size_t i = 0; i + 8 <= head; i += 8) {
        s_head = add_end_around(s_head, load64(p + i));
    }
    if (head & 7) {
        s_head = add_end_around(s_head, piece_from_start(p + (head & ~(size_t)7), head & 7));
    }
    p += head;
    n -= head;
    __m256i r0 = _mm256_setzero_si256(), r1 = r0, r2 = r0, r3 = r0;
    __m256i h0 = r0, h1 = r0, h2 = r0, h3 = r0;
    while (n >= 128) {
        __m256i x0 = _mm256_load_si256((const __m256i *)p);
        __m256i x1 = _mm256_load_si256((const __m256i *)(p + 32));
        __m256i x2 = _mm256_load_si256((const __m256i *)(p + 64));
        __m256i x3 = _mm256_load_si256((const __m256i *)(p + 96));
        IN_REGISTER(x0);
        IN_REGISTER(x1);
        IN_REGISTER(x2);
        IN_REGISTER(x3);
        r0 = _mm256_add_epi64(r0, x0);
        h0 = _mm256_add_epi64(h0, _mm256_srli_epi64(x0, 32));
        r1 = _mm256_add_epi64(r1, x1);
        h1 = _mm256_add_epi64(h1, _mm256_srli_epi64(x1, 32));
        r2 = _mm256_add_epi64(r2, x2);
        h2 = _mm256_add_epi64(h2, _mm256_srli_epi64(x2, 32));
        r3 = _mm256_add_epi64(r3, x3);
        h3 = _mm256_add_epi64(h3, _mm256_srli_epi64(x3, 32));
        p += 128;
        n -= 128;
    }
    while (n >= 32) {
        __m256i x = _mm256_load_si256((const __m256i *)p);
        IN_REGISTER(x);
        r0 = _mm256_add_epi64(r0, x);
        h0 = _mm256_add_epi64(h0, _mm256_srli_epi64(x, 32));
        p += 32;
        n -= 32;
    }
    r0 = _mm256_add_epi64(_mm256_add_epi64(r0, r1), _mm256_add_epi64(r2, r3));
    h0 = _mm256_add_epi64(_mm256_add_epi64(h0, h1), _mm256_add_epi64(h2, h3));
    /* Per lane, lo + hi = r - (h << 32) + h, exact and below 2**62; so is the sum of lanes. */
    __m256i t = _mm256_add_epi64(_mm256_sub_epi64(r0, _mm256_slli_epi64(h0, 32)), h0);
    __m128i u = _mm_add_epi64(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
    uint64_t lanes = (uint64_t)_mm_cvtsi128_si64(u) + (uint64_t)_mm_extract_epi64(u, 1);
    uint64_t body = sum_tail(p, n, lanes);
    return add_end_around(s_head, rephase(body, head));
}
#endif

static sum_fn kernel = sum_portable;
static const char *kernel_name = "portable";

static int
have_avx2(void)
{
#if USTACK_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
#else
    return 0;
#endif
}

/* The canonical one's-complement sum of p[0:n] plus `initial`, in network byte order. */
static uint32_t
checksum_sum(const unsigned char *p, size_t n, uint64_t initial)
{
    uint64_t s;
    if (n < SHORT) {
        s = sum_portable(p, n);
    }
    else {
        s = 0;
        while (n > BLOCK) {
            s = add_end_around(s, kernel(p, BLOCK));
            p += BLOCK;
            n -= BLOCK;
        }
        s = add_end_around(s, kernel(p, n));
    }
    uint32_t f = fold64(s);
#if !PY_BIG_ENDIAN
    f = ((f & 0xFFu) << 8) | (f >> 8);
#endif
    return fold64((uint64_t)f + (initial & U32_MAX) + (initial >> 32));
}

/* Argument handling. Errors match the pure-Python module: TypeError for a wrong type, ValueError
 * for an integer out of range, the buffer protocol's own errors for bad data. */

typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;
    Py_buffer view;
    int release;
} data_t;

static inline int
data_get(PyObject *obj, data_t *d)
{
    if (PyBytes_CheckExact(obj)) {
        d->buf = (const unsigned char *)PyBytes_AS_STRING(obj);
        d->len = PyBytes_GET_SIZE(obj);
        d->release = 0;
        return 0;
    }
    if (PyObject_GetBuffer(obj, &d->view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    d->buf = (const unsigned char *)d->view.buf;
    d->len = d->view.len;
    d->release = 1;
    return 0;
}

static inline void
data_release(data_t *d)
{
    if (d->release) {
        PyBuffer_Release(&d->view);
    }
}

static int
uint_arg(PyObject *obj, uint64_t max, const char *name, uint64_t *out)
{
    unsigned long long v;
    if (PyLong_Check(obj)) {
        v = PyLong_AsUnsignedLongLong(obj);
    }
    else {
        PyObject *index = PyNumber_Index(obj);
        if (index == NULL) {
            return -1;
        }
        v = PyLong_AsUnsignedLongLong(index);
        Py_DECREF(index);
    }
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
        goto out_of_range;
    }
    if (v > max) {
        goto out_of_range;
    }
    *out = v;
    return 0;
out_of_range:
    PyErr_Format(PyExc_ValueError, "%s must be in 0..%llu", name, (unsigned long long)max);
    return -1;
}

static int
check_nargs(const char *fname, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs == want) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd positional argument%s (%zd given)",
                 fname, want, want == 1 ? "" : "s", nargs);
    return -1;
}

/* (data, /, initial=0): the only keyword anywhere in the API is `initial`. */
static int
parse_data_initial(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames, PyObject **data, uint64_t *initial)
{
    PyObject *init = NULL;
    if (nargs == 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s() missing required positional-only argument 'data' (pos 1)", fname);
        return -1;
    }
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 2 positional arguments (%zd given)",
                     fname, nargs);
        return -1;
    }
    *data = args[0];
    if (nargs == 2) {
        init = args[1];
    }
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, i);
            if (PyUnicode_CompareWithASCIIString(key, "initial") != 0) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                             fname, key);
                return -1;
            }
            if (init != NULL) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got multiple values for argument 'initial'", fname);
                return -1;
            }
            init = args[nargs + i];
        }
    }
    *initial = 0;
    if (init != NULL && uint_arg(init, U64_MAX, "initial", initial) < 0) {
        return -1;
    }
    return 0;
}

static PyObject *
partial_sum_impl(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                 int complement)
{
    PyObject *obj;
    uint64_t initial = 0;
    data_t d;
    if (nargs == 1 && kwnames == NULL) {
        obj = args[0]; /* the common call, f(data), needs no parsing */
    }
    else if (parse_data_initial(fname, args, nargs, kwnames, &obj, &initial) < 0) {
        return NULL;
    }
    if (data_get(obj, &d) < 0) {
        return NULL;
    }
    uint32_t s = checksum_sum(d.buf, (size_t)d.len, initial);
    data_release(&d);
    return PyLong_FromLong((long)(complement ? (~s & U16_MAX) : s));
}

PyDoc_STRVAR(partial_sum_doc,
             "partial_sum($module, data, /, initial=0)\n--\n\n"
             "One's-complement sum of the bytes-like `data` in network order, plus `initial`,\n"
             "folded to 16 bits and not complemented (0 only if everything is zero).");

static PyObject *
py_partial_sum(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return partial_sum_impl("partial_sum", args, nargs, kwnames, 0);
}

PyDoc_STRVAR(internet_checksum_doc,
             "internet_checksum($module, data, /, initial=0)\n--\n\n"
             "RFC 1071 checksum of `data` (with the partial sum `initial` added first).");

static PyObject *
py_internet_checksum(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    return partial_sum_impl("internet_checksum", args, nargs, kwnames, 1);
}

PyDoc_STRVAR(finish_doc,
             "finish($module, total, /)\n--\n\n"
             "Fold a partial sum (0..2**64-1) to 16 bits and complement it: the checksum.");

static PyObject *
py_finish(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t s;
    if (check_nargs("finish", nargs, 1) < 0 || uint_arg(args[0], U64_MAX, "total", &s) < 0) {
        return NULL;
    }
    return PyLong_FromLong((long)(~fold64(s) & U16_MAX));
}

static inline uint32_t
pseudo_header_sum(uint64_t src, uint64_t dst, uint64_t proto, uint64_t length)
{
    return fold64((src >> 16) + (src & U16_MAX) + (dst >> 16) + (dst & U16_MAX) + proto + length);
}

PyDoc_STRVAR(ipv4_pseudo_header_sum_doc,
             "ipv4_pseudo_header_sum($module, src, dst, proto, length, /)\n--\n\n"
             "Partial sum of the IPv4 pseudo-header (RFC 9293 3.1); addresses are host-order\n"
             "ints.");

static PyObject *
py_ipv4_pseudo_header_sum(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t src, dst, proto, length;
    if (check_nargs("ipv4_pseudo_header_sum", nargs, 4) < 0 ||
        uint_arg(args[0], U32_MAX, "src", &src) < 0 ||
        uint_arg(args[1], U32_MAX, "dst", &dst) < 0 ||
        uint_arg(args[2], 0xFF, "proto", &proto) < 0 ||
        uint_arg(args[3], U16_MAX, "length", &length) < 0) {
        return NULL;
    }
    return PyLong_FromLong((long)pseudo_header_sum(src, dst, proto, length));
}

/* A 128-bit address (an int in 0..2**128-1, or anything with __index__) as its high and low
 * 64-bit halves, with the public API only: the high half is the value shifted right by 64 (a
 * negative value stays negative, and a value of 2**128 or more leaves a high half above
 * 2**64 - 1: both overflow), the low half is the value modulo 2**64. */
static int
uint128_arg(PyObject *obj, const char *name, uint64_t *hi, uint64_t *lo)
{
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL) {
        return -1;
    }
    PyObject *shift = PyLong_FromLong(64); /* a cached small int: no allocation */
    PyObject *high = shift == NULL ? NULL : PyNumber_Rshift(index, shift);
    Py_XDECREF(shift);
    if (high == NULL) {
        Py_DECREF(index);
        return -1;
    }
    unsigned long long h = PyLong_AsUnsignedLongLong(high);
    Py_DECREF(high);
    if (h == (unsigned long long)-1 && PyErr_Occurred()) {
        Py_DECREF(index);
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be in 0..%s", name, U128_MAX_DECIMAL);
        return -1;
    }
    unsigned long long l = PyLong_AsUnsignedLongLongMask(index);
    Py_DECREF(index);
    if (l == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *hi = h;
    *lo = l;
    return 0;
}

/* The sum of a 64-bit value's two 32-bit halves: congruent to it modulo 0xFFFF (2**32 is 1
 * modulo 0xFFFF), below 2**33, and zero only if the value is. */
static inline uint64_t
halves(uint64_t v)
{
    return (v >> 32) + (v & U32_MAX);
}

PyDoc_STRVAR(ipv6_pseudo_header_sum_doc,
             "ipv6_pseudo_header_sum($module, src, dst, next_header, length, /)\n--\n\n"
             "Partial sum of the IPv6 pseudo-header (RFC 8200 8.1); addresses are 128-bit\n"
             "host-order ints, length is the 32-bit upper-layer packet length.");

static PyObject *
py_ipv6_pseudo_header_sum(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t src_hi, src_lo, dst_hi, dst_lo, next_header, length;
    if (check_nargs("ipv6_pseudo_header_sum", nargs, 4) < 0 ||
        uint128_arg(args[0], "src", &src_hi, &src_lo) < 0 ||
        uint128_arg(args[1], "dst", &dst_hi, &dst_lo) < 0 ||
        uint_arg(args[2], 0xFF, "next_header", &next_header) < 0 ||
        uint_arg(args[3], U32_MAX, "length", &length) < 0) {
        return NULL;
    }
    /* Four terms below 2**33 and two below 2**32 and 2**8: no carry is lost before folding. The
     * 24 zero bits of the pseudo-header add nothing. */
    uint64_t total = halves(src_hi) + halves(src_lo) + halves(dst_hi) + halves(dst_lo) +
                     next_header + length;
    return PyLong_FromLong((long)fold64(total));
}

/* The checksum of a TCP segment over the pseudo-header; 0 means a received segment verifies. */
static int
tcp_impl(const char *fname, PyObject *const *args, Py_ssize_t nargs, uint32_t *out)
{
    uint64_t src, dst;
    data_t d;
    if (check_nargs(fname, nargs, 3) < 0 || uint_arg(args[0], U32_MAX, "src", &src) < 0 ||
        uint_arg(args[1], U32_MAX, "dst", &dst) < 0 || data_get(args[2], &d) < 0) {
        return -1;
    }
    if (d.len > TCP_MAX_LENGTH) {
        data_release(&d);
        PyErr_Format(PyExc_ValueError, "segment longer than %d bytes", TCP_MAX_LENGTH);
        return -1;
    }
    uint32_t ph = pseudo_header_sum(src, dst, PROTO_TCP, (uint64_t)d.len);
    *out = ~checksum_sum(d.buf, (size_t)d.len, ph) & U16_MAX;
    data_release(&d);
    return 0;
}

PyDoc_STRVAR(tcp_checksum_doc,
             "tcp_checksum($module, src, dst, segment, /)\n--\n\n"
             "Checksum of a TCP `segment` (header with checksum field zeroed, plus payload).");

static PyObject *
py_tcp_checksum(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t c;
    if (tcp_impl("tcp_checksum", args, nargs, &c) < 0) {
        return NULL;
    }
    return PyLong_FromLong((long)c);
}

PyDoc_STRVAR(verify_tcp_doc,
             "verify_tcp($module, src, dst, segment, /)\n--\n\n"
             "True if the received TCP `segment` carries a correct checksum.");

static PyObject *
py_verify_tcp(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t c;
    if (tcp_impl("verify_tcp", args, nargs, &c) < 0) {
        return NULL;
    }
    return PyBool_FromLong(c == 0);
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), in one's-complement arithmetic. */
PyDoc_STRVAR(update16_doc,
             "update16($module, old_checksum, old_word, new_word, /)\n--\n\n"
             "RFC 1624 eqn. 3: the checksum after one 16-bit word changes.");

static PyObject *
py_update16(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t hc, m, m1;
    if (check_nargs("update16", nargs, 3) < 0 ||
        uint_arg(args[0], U16_MAX, "old_checksum", &hc) < 0 ||
        uint_arg(args[1], U16_MAX, "old_word", &m) < 0 ||
        uint_arg(args[2], U16_MAX, "new_word", &m1) < 0) {
        return NULL;
    }
    uint64_t s = (hc ^ U16_MAX) + (m ^ U16_MAX) + m1;
    return PyLong_FromLong((long)(~fold64(s) & U16_MAX));
}

PyDoc_STRVAR(update32_doc,
             "update32($module, old_checksum, old_dword, new_dword, /)\n--\n\n"
             "RFC 1624 eqn. 3 applied to both halves of a changed 32-bit field.");

static PyObject *
py_update32(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t hc, m, m1;
    if (check_nargs("update32", nargs, 3) < 0 ||
        uint_arg(args[0], U16_MAX, "old_checksum", &hc) < 0 ||
        uint_arg(args[1], U32_MAX, "old_dword", &m) < 0 ||
        uint_arg(args[2], U32_MAX, "new_dword", &m1) < 0) {
        return NULL;
    }
    uint64_t s = (hc ^ U16_MAX) + ((m >> 16) ^ U16_MAX) + ((m & U16_MAX) ^ U16_MAX) +
                 (m1 >> 16) + (m1 & U16_MAX);
    return PyLong_FromLong((long)(~fold64(s) & U16_MAX));
}

PyDoc_STRVAR(kernel_doc, "_kernel($module, /)\n--\n\nName of the active summing kernel.");

static PyObject *
py_kernel(PyObject *module, PyObject *unused)
{
    return PyUnicode_FromString(kernel_name);
}

PyDoc_STRVAR(set_kernel_doc,
             "_set_kernel($module, name, /)\n--\n\n"
             "Select the summing kernel ('avx2' or 'portable', see KERNELS) for tests and\n"
             "benchmarks; returns the previous one's name.");

static PyObject *
py_set_kernel(PyObject *module, PyObject *name)
{
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "kernel name must be str, not %.100s",
                     Py_TYPE(name)->tp_name);
        return NULL;
    }
    const char *previous = kernel_name;
    if (PyUnicode_CompareWithASCIIString(name, "portable") == 0) {
        kernel = sum_portable;
        kernel_name = "portable";
    }
#if USTACK_HAVE_AVX2
    else if (PyUnicode_CompareWithASCIIString(name, "avx2") == 0 && have_avx2()) {
        kernel = sum_avx2;
        kernel_name = "avx2";
    }
#endif
    else {
        PyErr_Format(PyExc_ValueError, "kernel %R is not available here", name);
        return NULL;
    }
    return PyUnicode_FromString(previous);
}

static PyMethodDef methods[] = {
    {"partial_sum", (PyCFunction)(void (*)(void))py_partial_sum, METH_FASTCALL | METH_KEYWORDS,
     partial_sum_doc},
    {"internet_checksum", (PyCFunction)(void (*)(void))py_internet_checksum,
     METH_FASTCALL | METH_KEYWORDS, internet_checksum_doc},
    {"finish", (PyCFunction)(void (*)(void))py_finish, METH_FASTCALL, finish_doc},
    {"ipv4_pseudo_header_sum", (PyCFunction)(void (*)(void))py_ipv4_pseudo_header_sum,
     METH_FASTCALL, ipv4_pseudo_header_sum_doc},
    {"ipv6_pseudo_header_sum", (PyCFunction)(void (*)(void))py_ipv6_pseudo_header_sum,
     METH_FASTCALL, ipv6_pseudo_header_sum_doc},
    {"tcp_checksum", (PyCFunction)(void (*)(void))py_tcp_checksum, METH_FASTCALL,
     tcp_checksum_doc},
    {"verify_tcp", (PyCFunction)(void (*)(void))py_verify_tcp, METH_FASTCALL, verify_tcp_doc},
    {"update16", (PyCFunction)(void (*)(void))py_update16, METH_FASTCALL, update16_doc},
    {"update32", (PyCFunction)(void (*)(void))py_update32, METH_FASTCALL, update32_doc},
    {"_kernel", py_kernel, METH_NOARGS, kernel_doc},
    {"_set_kernel", py_set_kernel, METH_O, set_kernel_doc},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    PyObject *kernels;
    if (have_avx2()) {
#if USTACK_HAVE_AVX2
        kernel = sum_avx2;
        kernel_name = "avx2";
#endif
        kernels = Py_BuildValue("(ss)", "avx2", "portable");
    }
    else {
        kernels = Py_BuildValue("(s)", "portable");
    }
    if (kernels == NULL) {
        return -1;
    }
    int rc = PyModule_AddObjectRef(module, "KERNELS", kernels);
    Py_DECREF(kernels);
    if (rc < 0) {
        return -1;
    }
    /* Why the avx2 kernel is missing, for IMPLEMENTATION_REASON. */
    const char *why = USTACK_HAVE_AVX2 ? (have_avx2() ? "" : "CPU has no AVX2")
                                       : "built without the AVX2 kernel";
    return PyModule_AddStringConstant(module, "NO_AVX2_REASON", why);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ustack.wire._checksum",
    .m_doc = "The Internet checksum (RFC 1071, RFC 1624) in C; see ustack.wire.checksum.",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__checksum(void)
{
    return PyModuleDef_Init(&moduledef);
}
