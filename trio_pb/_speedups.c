/* trio_pb._speedups: the compiled codec (see "The compiled codec" in docs/internals.rst).
 *
 * The pure-Python modules trio_pb.banana and trio_pb.jelly are the reference; this module only
 * ever produces what they produce.  Whenever it is not sure, it returns None ("not plain: use
 * the general path") and the pure path decides, bytes or error.  That includes every value over
 * a limit, so that the error raised, its class and its message, are always the pure path's own.
 *
 * encode_plain(value, ...) is banana.encode(jelly.jelly(value)) for plain data: None, bool, int,
 * float, str, bytes, and list, tuple, dict, set, frozenset of them, nested.  Instances, shared
 * containers (one seen twice, which jelly sends with reference/dereference tags) and cycles give
 * None.  encode_message(head, values, ...) is one PB message: the banana atoms of head, then the
 * jelly of each value, each value with its own space of references as jelly gives it.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define BAIL 1 /* not plain, or over a limit: the caller returns None */

/* Banana type bytes. */
#define T_LIST 0x80
#define T_INT 0x81
#define T_STRING 0x82
#define T_NEG 0x83
#define T_FLOAT 0x84
#define T_LONGINT 0x85
#define T_LONGNEG 0x86
#define T_VOCAB 0x87

/* The largest prefix banana sends, in base-128 digits (banana.PREFIX_LIMIT). */
#define PREFIX_DIGITS 64

/* Deepest banana list nesting encoded here; deeper values go to the pure path.  Far below
 * the recursion limit, so that the C stack is never at risk whatever depth limit an Encoder
 * has, and so that nothing is encoded here that pure jelly, which recurses a few Python frames
 * per level, would refuse with its "nested too deeply" error. */
#define DEPTH_CAP 100

/* -------------------------------------------------------------------------------------------
 * The attributes read and set on banana's Encoder and Decoder, by names interned at import:
 * PyObject_GetAttrString would make (and hash) a new str each time, a dozen times a message. */

#define ATTR_NAMES(X)                                                                              \
    X(_base) X(_buffer) X(_message_items) X(_message_start) X(_needed) X(_plain_scan) X(_pos)      \
    X(_stack) X(depth_limit) X(last_message_items) X(message_items_limit) X(message_size_limit)    \
    X(prefix_limit) X(size_limit) X(vocabulary)
#define ATTR(name) attr_##name
#define DECLARE_ATTR(name) static PyObject *ATTR(name) = NULL;
ATTR_NAMES(DECLARE_ATTR)

/* The heads of the commands decode_plain builds (bytes are immutable: one object serves all). */
static PyObject *message_head = NULL, *answer_head = NULL;

static int
intern_names(void)
{
#define INTERN_ATTR(name)                                                                          \
    if (ATTR(name) == NULL && (ATTR(name) = PyUnicode_InternFromString(#name)) == NULL)            \
        return -1;
    ATTR_NAMES(INTERN_ATTR)
#undef INTERN_ATTR
    if (message_head == NULL && (message_head = PyBytes_FromStringAndSize("message", 7)) == NULL)
        return -1;
    if (answer_head == NULL && (answer_head = PyBytes_FromStringAndSize("answer", 6)) == NULL)
        return -1;
    return 0;
}

/* -------------------------------------------------------------------------------------------
 * The vocabulary of the encoder's dialect: a table built from its tuple (banana.PB_VOCABULARY,
 * which every Encoder shares) and kept until an encoder comes with another tuple. */

#define VOCAB_MAX 128
#define VOCAB_WORD_MAX 32
static char vocab_words[VOCAB_MAX][VOCAB_WORD_MAX];
static Py_ssize_t vocab_lengths[VOCAB_MAX];
static Py_ssize_t vocab_size = 0;
static PyObject *vocab_tuple = NULL; /* the tuple the table was built from (a strong reference) */

/* The vocabulary index of s, or 0 if it is not a word (index 0 is unused on the wire). */
static inline Py_ssize_t
vocab_index(const char *s, Py_ssize_t n)
{
    if (n == 0 || n >= VOCAB_WORD_MAX)
        return 0;
    for (Py_ssize_t i = 1; i < vocab_size; i++) {
        if (vocab_lengths[i] == n && vocab_words[i][0] == s[0] && memcmp(vocab_words[i], s, n) == 0)
            return i;
    }
    return 0;
}

/* Make words the table: 0, or BAIL if it is not a tuple of at most 128 short bytes. */
static int
use_vocabulary(PyObject *words)
{
    if (words == vocab_tuple)
        return 0;
    if (!PyTuple_CheckExact(words) || PyTuple_GET_SIZE(words) > VOCAB_MAX)
        return BAIL;
    Py_ssize_t count = PyTuple_GET_SIZE(words);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *word = PyTuple_GET_ITEM(words, i);
        if (!PyBytes_CheckExact(word) || PyBytes_GET_SIZE(word) >= VOCAB_WORD_MAX)
            return BAIL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *word = PyTuple_GET_ITEM(words, i);
        vocab_lengths[i] = PyBytes_GET_SIZE(word);
        memcpy(vocab_words[i], PyBytes_AS_STRING(word), (size_t)vocab_lengths[i]);
    }
    /* Index 0 is never a word, whatever the tuple holds there. */
    if (count)
        vocab_lengths[0] = -1;
    vocab_size = count;
    Py_INCREF(words);
    Py_XSETREF(vocab_tuple, words);
    return 0;
}

/* -------------------------------------------------------------------------------------------
 * A set of object addresses: the containers already met in one jelly operation. */

typedef struct {
    void **slots;
    size_t mask; /* capacity - 1; capacity is a power of two */
    size_t used;
    void *inline_slots[64];
} PtrSet;

static void
ptrset_init(PtrSet *s)
{
    memset(s->inline_slots, 0, sizeof(s->inline_slots));
    s->slots = s->inline_slots;
    s->mask = 63;
    s->used = 0;
}

static void
ptrset_clear(PtrSet *s)
{
    if (s->slots != s->inline_slots)
        PyMem_Free(s->slots);
    ptrset_init(s);
}

static inline size_t
ptr_hash(void *p)
{
    uintptr_t x = (uintptr_t)p >> 4;
    return (size_t)(x * (uintptr_t)0x9E3779B97F4A7C15ULL);
}

/* Add p: 0 if it was new, BAIL if it was there already, -1 on memory error. */
static int
ptrset_add(PtrSet *s, void *p)
{
    size_t i = ptr_hash(p) & s->mask;
    while (s->slots[i] != NULL) {
        if (s->slots[i] == p)
            return BAIL;
        i = (i + 1) & s->mask;
    }
    s->slots[i] = p;
    s->used++;
    if (s->used * 2 > s->mask) {
        size_t capacity = (s->mask + 1) * 2;
        void **slots = PyMem_Calloc(capacity, sizeof(void *));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (size_t j = 0; j <= s->mask; j++) {
            void *q = s->slots[j];
            if (q != NULL) {
                size_t k = ptr_hash(q) & (capacity - 1);
                while (slots[k] != NULL)
                    k = (k + 1) & (capacity - 1);
                slots[k] = q;
            }
        }
        if (s->slots != s->inline_slots)
            PyMem_Free(s->slots);
        s->slots = slots;
        s->mask = capacity - 1;
    }
    return 0;
}

/* -------------------------------------------------------------------------------------------
 * The encoder state: the output and the limits of one Encoder. */

typedef struct {
    unsigned char *data;
    Py_ssize_t len, cap;
    /* Past the inline buffer the output is built in a bytes object, handed out at the end
     * without another copy (a message of large strings is copied once, as b"".join does). */
    PyObject *bytes;
    int use_vocab;
    Py_ssize_t size_limit, depth_limit, message_size_limit, items_limit;
    Py_ssize_t items; /* elements of the expression so far, itself included */
    PtrSet seen;
    unsigned char inline_data[1024];
} Ctx;

static int
grow(Ctx *c, Py_ssize_t need)
{
    if (need > PY_SSIZE_T_MAX / 2 - c->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t want = c->len + need;
    Py_ssize_t cap = c->cap * 2;
    if (cap < want)
        cap = want;
    if (c->bytes == NULL) {
        c->bytes = PyBytes_FromStringAndSize(NULL, cap);
        if (c->bytes == NULL)
            return -1;
        memcpy(PyBytes_AS_STRING(c->bytes), c->data, (size_t)c->len);
    }
    else if (_PyBytes_Resize(&c->bytes, cap) < 0) {
        return -1; /* c->bytes is NULL now */
    }
    c->data = (unsigned char *)PyBytes_AS_STRING(c->bytes);
    c->cap = cap;
    return 0;
}

static inline int
reserve(Ctx *c, Py_ssize_t need)
{
    return (c->cap - c->len >= need) ? 0 : grow(c, need);
}

static void
ctx_init(Ctx *c)
{
    c->data = c->inline_data;
    c->len = 0;
    c->cap = (Py_ssize_t)sizeof(c->inline_data);
    c->bytes = NULL;
    c->items = 0;
    ptrset_init(&c->seen);
}

static void
ctx_free(Ctx *c)
{
    Py_CLEAR(c->bytes);
    ptrset_clear(&c->seen);
}

/* A prefix (base 128, low digits first; zero is one 0 digit) and a type byte. */
static inline int
put_header(Ctx *c, uint64_t n, unsigned char type)
{
    if (reserve(c, 11) < 0)
        return -1;
    unsigned char *p = c->data + c->len;
    do {
        *p++ = (unsigned char)(n & 0x7F);
        n >>= 7;
    } while (n);
    *p++ = type;
    c->len = p - c->data;
    return 0;
}

/* A banana string, or its VOCAB token. */
static int
put_bytes(Ctx *c, const char *s, Py_ssize_t n)
{
    if (c->use_vocab) {
        Py_ssize_t index = vocab_index(s, n);
        if (index)
            return put_header(c, (uint64_t)index, T_VOCAB);
    }
    if (n > c->size_limit)
        return BAIL;
    if (put_header(c, (uint64_t)n, T_STRING) < 0 || reserve(c, n) < 0)
        return -1;
    memcpy(c->data + c->len, s, (size_t)n);
    c->len += n;
    /* Over the message limit already: no need to build the rest. */
    return c->len > c->message_size_limit ? BAIL : 0;
}

/* An int of any size: INT/NEG up to 2**31, LONGINT/LONGNEG beyond, as banana.Encoder does. */
static int
put_int(Ctx *c, PyObject *o)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (!overflow) {
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (v >= 0)
            return put_header(c, (uint64_t)v, v < 0x80000000LL ? T_INT : T_LONGINT);
        uint64_t magnitude = (uint64_t)(-(v + 1)) + 1;
        return put_header(c, magnitude, magnitude <= 0x80000000ULL ? T_NEG : T_LONGNEG);
    }
    /* Beyond 64 bits: rare, done through int's own methods. */
    int result = -1;
    PyObject *magnitude = PyNumber_Absolute(o);
    PyObject *bits_obj = NULL, *raw = NULL;
    if (magnitude == NULL)
        goto done;
    bits_obj = PyObject_CallMethod(magnitude, "bit_length", NULL);
    if (bits_obj == NULL)
        goto done;
    Py_ssize_t bits = PyLong_AsSsize_t(bits_obj);
    if (bits < 0)
        goto done;
    Py_ssize_t digits = (bits + 6) / 7;
    if (digits > PREFIX_DIGITS) {
        result = BAIL; /* "int is too large to send": the pure path says it */
        goto done;
    }
    Py_ssize_t nbytes = (bits + 7) / 8;
    raw = PyObject_CallMethod(magnitude, "to_bytes", "ns", nbytes, "little");
    if (raw == NULL || !PyBytes_Check(raw) || PyBytes_GET_SIZE(raw) != nbytes)
        goto done;
    if (reserve(c, digits + 1) < 0)
        goto done;
    {
        const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(raw);
        unsigned char *p = c->data + c->len;
        for (Py_ssize_t i = 0; i < digits; i++) {
            Py_ssize_t bit = i * 7, at = bit / 8, shift = bit % 8;
            unsigned value = (unsigned)in[at] >> shift;
            if (shift > 1 && at + 1 < nbytes)
                value |= (unsigned)in[at + 1] << (8 - shift);
            *p++ = (unsigned char)(value & 0x7F);
        }
        *p++ = overflow > 0 ? T_LONGINT : T_LONGNEG;
        c->len = p - c->data;
    }
    result = 0;
done:
    Py_XDECREF(magnitude);
    Py_XDECREF(bits_obj);
    Py_XDECREF(raw);
    return result;
}

static int
put_float(Ctx *c, PyObject *o)
{
    if (reserve(c, 9) < 0)
        return -1;
    c->data[c->len] = T_FLOAT;
    /* Big-endian IEEE 754, as struct.pack("!d") gives it. */
#if PY_VERSION_HEX >= 0x030B0000
    if (PyFloat_Pack8(PyFloat_AS_DOUBLE(o), (char *)c->data + c->len + 1, 0) < 0)
        return -1;
#else
    if (_PyFloat_Pack8(PyFloat_AS_DOUBLE(o), c->data + c->len + 1, 0) < 0)
        return -1;
#endif
    c->len += 9;
    return 0;
}

/* The header of a list of n elements at nesting level `level` (the top-level list is 1). */
static inline int
open_list(Ctx *c, Py_ssize_t n, int level)
{
    if (level > DEPTH_CAP || level > c->depth_limit || n > c->size_limit)
        return BAIL;
    c->items += n;
    if (c->items > c->items_limit)
        return BAIL;
    return put_header(c, (uint64_t)n, T_LIST);
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int _r = (expr);                                                                           \
        if (_r)                                                                                    \
            return _r;                                                                             \
    } while (0)

#define PUT_TAG(c, tag) put_bytes((c), (tag), (Py_ssize_t)(sizeof(tag) - 1))

/* [b"unicode", utf8]: the bytes go through the vocabulary like any other. */
static int
put_str(Ctx *c, PyObject *o, int level)
{
    TRY(open_list(c, 2, level));
    TRY(PUT_TAG(c, "unicode"));
    if (PyUnicode_IS_COMPACT_ASCII(o))
        return put_bytes(c, (const char *)PyUnicode_DATA(o), PyUnicode_GET_LENGTH(o));
    /* A temporary, as str.encode makes: PyUnicode_AsUTF8AndSize would keep a copy in the str. */
    PyObject *utf8 = PyUnicode_AsUTF8String(o);
    if (utf8 == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        /* A lone surrogate: jelly's JellyError comes from the pure path. */
        PyErr_Clear();
        return BAIL;
    }
    int result = put_bytes(c, PyBytes_AS_STRING(utf8), PyBytes_GET_SIZE(utf8));
    Py_DECREF(utf8);
    return result;
}

static int put_value(Ctx *c, PyObject *o, int level);

/* A value inside a list at `level`: atoms as they are, everything else one level down. */
static inline int
put_item(Ctx *c, PyObject *o, int level)
{
    PyTypeObject *type = Py_TYPE(o);
    if (type == &PyLong_Type)
        return put_int(c, o);
    if (type == &PyBytes_Type)
        return put_bytes(c, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o));
    if (type == &PyFloat_Type)
        return put_float(c, o);
    return put_value(c, o, level + 1);
}

static int
put_sequence(Ctx *c, PyObject *o, int level, const char *tag, Py_ssize_t tag_len)
{
    TRY(ptrset_add(&c->seen, o));
    PyObject **items = PySequence_Fast_ITEMS(o);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
    TRY(open_list(c, n + 1, level));
    TRY(put_bytes(c, tag, tag_len));
    /* No Python code runs while encoding (only exact built-in types are handled), so the
     * list cannot change size under the loop; the size is read again all the same. */
    for (Py_ssize_t i = 0; i < n && i < PySequence_Fast_GET_SIZE(o); i++)
        TRY(put_item(c, items[i], level));
    return 0;
}

static int
put_set(Ctx *c, PyObject *o, int level, const char *tag, Py_ssize_t tag_len)
{
    TRY(ptrset_add(&c->seen, o));
    TRY(open_list(c, PySet_GET_SIZE(o) + 1, level));
    TRY(put_bytes(c, tag, tag_len));
    PyObject *iterator = PyObject_GetIter(o);
    if (iterator == NULL)
        return -1;
    PyObject *item;
    int result = 0;
    while ((item = PyIter_Next(iterator)) != NULL) {
        result = put_item(c, item, level);
        Py_DECREF(item);
        if (result)
            break;
    }
    Py_DECREF(iterator);
    if (result == 0 && PyErr_Occurred())
        result = -1;
    return result;
}

static int
put_dict(Ctx *c, PyObject *o, int level)
{
    TRY(ptrset_add(&c->seen, o));
    TRY(open_list(c, PyDict_GET_SIZE(o) + 1, level));
    TRY(PUT_TAG(c, "dictionary"));
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(o, &pos, &key, &value)) {
        /* [key, value], the key first: jelly numbers shared objects in this order. */
        TRY(open_list(c, 2, level + 1));
        TRY(put_item(c, key, level + 1));
        TRY(put_item(c, value, level + 1));
    }
    return 0;
}

/* The jelly of o, a value that is not an atom, as a list at nesting level `level`. */
static int
put_value(Ctx *c, PyObject *o, int level)
{
    PyTypeObject *type = Py_TYPE(o);
    if (type == &PyUnicode_Type)
        return put_str(c, o, level);
    if (type == &PyList_Type)
        return put_sequence(c, o, level, "list", 4);
    if (type == &PyDict_Type)
        return put_dict(c, o, level);
    if (type == &PyTuple_Type)
        return put_sequence(c, o, level, "tuple", 5);
    if (o == Py_None) {
        TRY(open_list(c, 1, level));
        return PUT_TAG(c, "None");
    }
    if (type == &PyBool_Type) {
        TRY(open_list(c, 2, level));
        TRY(PUT_TAG(c, "boolean"));
        return o == Py_True ? PUT_TAG(c, "true") : PUT_TAG(c, "false");
    }
    if (type == &PySet_Type)
        return put_set(c, o, level, "set", 3);
    if (type == &PyFrozenSet_Type)
        return put_set(c, o, level, "frozenset", 9);
    /* An instance, a subclass, a datetime ...: the general path. */
    return BAIL;
}

/* -------------------------------------------------------------------------------------------
 * The Python functions. */

static int
read_limit(PyObject *encoder, PyObject *name, Py_ssize_t *out)
{
    PyObject *value = PyObject_GetAttr(encoder, name);
    if (value == NULL)
        return -1;
    *out = PyLong_AsSsize_t(value);
    Py_DECREF(value);
    if (*out == -1 && PyErr_Occurred()) {
        /* A limit beyond Py_ssize_t is no limit at all here. */
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        *out = PY_SSIZE_T_MAX;
    }
    return 0;
}

/* The limits and dialect of a banana.Encoder: 0, BAIL for a vocabulary not handled here, or -1. */
static int
ctx_setup(Ctx *c, PyObject *encoder)
{
    ctx_init(c);
    if (read_limit(encoder, ATTR(size_limit), &c->size_limit) < 0 ||
        read_limit(encoder, ATTR(depth_limit), &c->depth_limit) < 0 ||
        read_limit(encoder, ATTR(message_size_limit), &c->message_size_limit) < 0 ||
        read_limit(encoder, ATTR(message_items_limit), &c->items_limit) < 0)
        return -1;
    PyObject *vocabulary = PyObject_GetAttr(encoder, ATTR(vocabulary));
    if (vocabulary == NULL)
        return -1;
    int result = 0;
    c->use_vocab = vocabulary != Py_None;
    if (c->use_vocab)
        result = use_vocabulary(vocabulary); /* BAIL: an odd table, left to the pure path */
    Py_DECREF(vocabulary);
    return result;
}

/* The bytes built, None if the value was not plain, NULL on error. */
static PyObject *
finish(Ctx *c, int result)
{
    PyObject *out = NULL;
    if (result == 0 && c->len <= c->message_size_limit) {
        if (c->bytes == NULL) {
            out = PyBytes_FromStringAndSize((const char *)c->data, c->len);
        }
        else if (_PyBytes_Resize(&c->bytes, c->len) == 0) {
            out = c->bytes;
            c->bytes = NULL;
        }
    }
    else if (result >= 0)
        out = Py_NewRef(Py_None);
    ctx_free(c);
    return out;
}

static PyObject *
encode_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encode_plain(encoder, value)");
        return NULL;
    }
    Ctx c;
    int setup = ctx_setup(&c, args[0]);
    if (setup)
        return finish(&c, setup);
    PyObject *value = args[1];
    PyTypeObject *type = Py_TYPE(value);
    int result;
    if (type == &PyLong_Type || type == &PyBytes_Type || type == &PyFloat_Type) {
        result = put_item(&c, value, 0);
    }
    else {
        /* The top-level list counts itself. */
        c.items = 1;
        result = put_value(&c, value, 1);
    }
    return finish(&c, result);
}

static PyObject *
encode_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_CheckExact(args[1]) || !PyTuple_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "encode_message(encoder, head: tuple, values: tuple)");
        return NULL;
    }
    PyObject *head = args[1], *values = args[2];
    Ctx c;
    int setup = ctx_setup(&c, args[0]);
    if (setup)
        return finish(&c, setup);
    Py_ssize_t n_head = PyTuple_GET_SIZE(head), n_values = PyTuple_GET_SIZE(values);
    c.items = 1;
    int result = open_list(&c, n_head + n_values, 1);
    for (Py_ssize_t i = 0; result == 0 && i < n_head; i++) {
        PyObject *atom = PyTuple_GET_ITEM(head, i);
        PyTypeObject *type = Py_TYPE(atom);
        /* The head is banana atoms, sent as they are. */
        if (type == &PyLong_Type || type == &PyBytes_Type || type == &PyFloat_Type)
            result = put_item(&c, atom, 1);
        else
            result = BAIL;
    }
    for (Py_ssize_t i = 0; result == 0 && i < n_values; i++) {
        /* Each value is its own jelly operation, with its own references. */
        ptrset_clear(&c.seen);
        result = put_item(&c, PyTuple_GET_ITEM(values, i), 1);
    }
    return finish(&c, result);
}

/* -------------------------------------------------------------------------------------------
 * Decoding: banana.Decoder._parse, line for line.
 *
 * The bytes come from the peer.  Every read of buf is at an index checked against `end` first;
 * lengths are compared with what is left (`number > end - body`) rather than added to an offset,
 * so no sum can overflow; a prefix wider than 63 bits becomes a Python int, never a C one; lists
 * are nested on an explicit stack bounded by depth_limit, never by recursion. */

static PyObject *DecodeError = NULL; /* trio_pb.errors.BananaDecodeError */
static PyObject *NeedData = NULL;    /* trio_pb._events.NEED_DATA */

typedef struct {
    Py_ssize_t remaining;
    PyObject *items; /* a strong reference */
} Frame;

/* A limit that fits a Py_ssize_t: 0, BAIL if it does not (the pure path takes over), -1. */
static int
read_exact_limit(PyObject *decoder, PyObject *name, Py_ssize_t *out)
{
    PyObject *value = PyObject_GetAttr(decoder, name);
    if (value == NULL)
        return -1;
    if (!PyLong_CheckExact(value)) {
        Py_DECREF(value);
        return BAIL;
    }
    *out = PyLong_AsSsize_t(value);
    Py_DECREF(value);
    if (*out == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        return BAIL;
    }
    return 0;
}

static int
set_ssize(PyObject *decoder, PyObject *name, Py_ssize_t value)
{
    PyObject *number = PyLong_FromSsize_t(value);
    if (number == NULL)
        return -1;
    int result = PyObject_SetAttr(decoder, name, number);
    Py_DECREF(number);
    return result;
}

/* The number of a prefix of n base-128 digits (low first), as a Python int of any size. */
static PyObject *
big_prefix(const unsigned char *digits, Py_ssize_t n)
{
    PyObject *result = PyLong_FromLong(0);
    PyObject *seven = PyLong_FromLong(7);
    if (result == NULL || seven == NULL)
        goto fail;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        PyObject *shifted = PyNumber_Lshift(result, seven);
        Py_DECREF(result);
        result = NULL;
        if (shifted == NULL)
            goto fail;
        PyObject *digit = PyLong_FromLong(digits[i]);
        if (digit == NULL) {
            Py_DECREF(shifted);
            goto fail;
        }
        result = PyNumber_Or(shifted, digit);
        Py_DECREF(shifted);
        Py_DECREF(digit);
        if (result == NULL)
            goto fail;
    }
    Py_DECREF(seven);
    return result;
fail:
    Py_XDECREF(result);
    Py_XDECREF(seven);
    return NULL;
}

static PyObject *
decode_parse(PyObject *module, PyObject *decoder)
{
    Py_ssize_t pos, base, message_start, message_items, size_limit, prefix_limit, depth_limit;
    Py_ssize_t message_size_limit, items_limit;
    int r;
    if ((r = read_exact_limit(decoder, ATTR(_pos), &pos)) || (r = read_exact_limit(decoder, ATTR(_base), &base)) ||
        (r = read_exact_limit(decoder, ATTR(_message_start), &message_start)) ||
        (r = read_exact_limit(decoder, ATTR(_message_items), &message_items)) ||
        (r = read_exact_limit(decoder, ATTR(size_limit), &size_limit)) ||
        (r = read_exact_limit(decoder, ATTR(prefix_limit), &prefix_limit)) ||
        (r = read_exact_limit(decoder, ATTR(depth_limit), &depth_limit)) ||
        (r = read_exact_limit(decoder, ATTR(message_size_limit), &message_size_limit)) ||
        (r = read_exact_limit(decoder, ATTR(message_items_limit), &items_limit))) {
        if (r < 0)
            return NULL;
        /* A limit or position beyond Py_ssize_t, or not an int: the pure parser. */
        return PyObject_CallMethod(decoder, "_parse", NULL);
    }
    /* Below 2**61, a sum of three of these (or of a size and a length within size_limit) cannot
     * overflow; the pure parser takes anything larger (an exabyte into a stream, or no limit). */
    const Py_ssize_t big = (Py_ssize_t)1 << 61;
    if (pos > big || base > big || message_start > big || message_items > big || size_limit > big ||
        message_size_limit > big || items_limit > big || pos < 0 || base < 0 || message_start < 0)
        return PyObject_CallMethod(decoder, "_parse", NULL);
    PyObject *buffer = PyObject_GetAttr(decoder, ATTR(_buffer));
    if (buffer == NULL)
        return NULL;
    PyObject *stack_list = PyObject_GetAttr(decoder, ATTR(_stack));
    PyObject *vocabulary = PyObject_GetAttr(decoder, ATTR(vocabulary));
    if (stack_list == NULL || vocabulary == NULL || !PyBytes_CheckExact(buffer) ||
        !PyList_CheckExact(stack_list) || (vocabulary != Py_None && !PyTuple_CheckExact(vocabulary))) {
        Py_DECREF(buffer);
        Py_XDECREF(stack_list);
        Py_XDECREF(vocabulary);
        if (PyErr_Occurred())
            return NULL;
        return PyObject_CallMethod(decoder, "_parse", NULL);
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(buffer);
    const Py_ssize_t end = PyBytes_GET_SIZE(buffer);
    PyObject *result = NULL;
    PyObject *item = NULL;
    Py_ssize_t needed = 1;

    /* The lists being filled: the innermost in (remaining, items), those around it in frames. */
    Frame *frames = NULL;
    Py_ssize_t depth = 0, capacity = 0;
    Py_ssize_t remaining = 0;
    PyObject *items = NULL;
    Py_ssize_t saved = PyList_GET_SIZE(stack_list);
    if (saved) {
        capacity = saved + 16;
        frames = PyMem_Malloc((size_t)capacity * sizeof(Frame));
        if (frames == NULL) {
            PyErr_NoMemory();
            goto error;
        }
        for (Py_ssize_t i = 0; i < saved; i++) {
            PyObject *entry = PyList_GET_ITEM(stack_list, i);
            Py_ssize_t count;
            if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2 ||
                !PyList_CheckExact(PyTuple_GET_ITEM(entry, 1)) ||
                (count = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 0))) < 0) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "Decoder._stack holds (remaining, list) pairs");
                goto error;
            }
            frames[depth].remaining = count;
            frames[depth].items = Py_NewRef(PyTuple_GET_ITEM(entry, 1));
            depth++;
        }
        if (PyList_SetSlice(stack_list, 0, saved, NULL) < 0)
            goto error;
        depth--;
        remaining = frames[depth].remaining;
        items = frames[depth].items; /* the reference moves to `items` */
    }

    while (pos < end) {
        /* The prefix: at most prefix_limit bytes below 0x80, then the type byte. */
        Py_ssize_t k = 0;
        while (pos + k < end && buf[pos + k] < 0x80 && k <= prefix_limit)
            k++;
        if (!(pos + k < end && buf[pos + k] >= 0x80 && k <= prefix_limit)) {
            if (end - pos > prefix_limit) {
                PyErr_Format(DecodeError, "Security precaution: more than %zd bytes of prefix", prefix_limit);
                goto error;
            }
            needed = end - pos + 1;
            break;
        }
        Py_ssize_t type_at = pos + k;
        /* The number, exact in `number` below 2**63 (nine significant digits; high zero digits
         * are legal), or in `wide`, a Python int, beyond. */
        Py_ssize_t significant = k;
        while (significant > 0 && buf[pos + significant - 1] == 0)
            significant--;
        uint64_t number = 0;
        PyObject *wide = NULL;
        if (significant <= 9) {
            for (Py_ssize_t i = significant - 1; i >= 0; i--)
                number = (number << 7) | buf[pos + i];
        }
        else {
            wide = big_prefix(buf + pos, significant);
            if (wide == NULL)
                goto error;
        }
        unsigned char kind = buf[type_at];
        Py_ssize_t body = type_at + 1;
        if (kind == T_STRING) {
            if (wide != NULL || number > (uint64_t)size_limit) {
                Py_XDECREF(wide);
                PyErr_SetString(DecodeError, "Security precaution: String too long.");
                goto error;
            }
            Py_ssize_t length = (Py_ssize_t)number;
            if (length > end - body) {
                if (items != NULL) {
                    /* length <= size_limit and every offset is a Py_ssize_t: no overflow here. */
                    Py_ssize_t size = base + body + length - message_start;
                    if (size > message_size_limit) {
                        PyErr_Format(DecodeError,
                                     "Security precaution: a message of more than %zd bytes (%zd at least)",
                                     message_size_limit, size);
                        goto error;
                    }
                }
                needed = body + length - pos;
                break;
            }
            item = PyBytes_FromStringAndSize((const char *)buf + body, length);
            if (item == NULL)
                goto error;
            pos = body + length;
        }
        else if (kind == T_LIST) {
            if (wide != NULL || number > (uint64_t)size_limit) {
                Py_XDECREF(wide);
                PyErr_SetString(DecodeError, "Security precaution: List too long.");
                goto error;
            }
            Py_ssize_t count = (Py_ssize_t)number;
            if (items == NULL) {
                /* A new top-level expression: one PB message. */
                message_start = base + pos;
                if (set_ssize(decoder, ATTR(_message_start), message_start) < 0)
                    goto error;
                message_items = 1 + count;
            }
            else {
                message_items += count;
            }
            if (message_items > items_limit) {
                PyErr_Format(DecodeError, "Security precaution: a message of more than %zd elements",
                             items_limit);
                goto error;
            }
            pos = body;
            if (count) {
                if (items != NULL) {
                    if (depth + 1 >= depth_limit) {
                        PyErr_Format(DecodeError, "lists are nested more than %zd deep", depth_limit);
                        goto error;
                    }
                    if (depth == capacity) {
                        Py_ssize_t grown = capacity ? capacity * 2 : 16;
                        Frame *more = PyMem_Realloc(frames, (size_t)grown * sizeof(Frame));
                        if (more == NULL) {
                            PyErr_NoMemory();
                            goto error;
                        }
                        frames = more;
                        capacity = grown;
                    }
                    frames[depth].remaining = remaining;
                    frames[depth].items = items;
                    depth++;
                    items = NULL;
                }
                /* The list grows as items come: a peer's count is not trusted with memory. */
                items = PyList_New(0);
                if (items == NULL)
                    goto error;
                remaining = count;
                continue;
            }
            item = PyList_New(0);
            if (item == NULL)
                goto error;
        }
        else if (kind == T_INT || kind == T_LONGINT) {
            item = wide != NULL ? wide : PyLong_FromUnsignedLongLong(number);
            if (item == NULL)
                goto error;
            pos = body;
        }
        else if (kind == T_VOCAB) {
            if (vocabulary == Py_None || wide != NULL || number == 0 ||
                number >= (uint64_t)PyTuple_GET_SIZE(vocabulary)) {
                PyObject *shown = wide != NULL ? wide : PyLong_FromUnsignedLongLong(number);
                if (shown != NULL) {
                    if (vocabulary == Py_None)
                        PyErr_Format(DecodeError, "VOCAB element %S outside the pb dialect", shown);
                    else
                        PyErr_Format(DecodeError, "VOCAB element %S is not in the vocabulary", shown);
                    Py_DECREF(shown);
                }
                goto error;
            }
            item = Py_NewRef(PyTuple_GET_ITEM(vocabulary, (Py_ssize_t)number));
            pos = body;
        }
        else if (kind == T_NEG || kind == T_LONGNEG) {
            if (wide != NULL) {
                item = PyNumber_Negative(wide);
                Py_DECREF(wide);
            }
            else {
                PyObject *magnitude = PyLong_FromUnsignedLongLong(number);
                item = magnitude != NULL ? PyNumber_Negative(magnitude) : NULL;
                Py_XDECREF(magnitude);
            }
            if (item == NULL)
                goto error;
            pos = body;
        }
        else if (kind == T_FLOAT) {
            Py_XDECREF(wide);
            if (8 > end - body) {
                needed = body + 8 - pos;
                break;
            }
#if PY_VERSION_HEX >= 0x030B0000
            double value = PyFloat_Unpack8((const char *)buf + body, 0);
#else
            double value = _PyFloat_Unpack8(buf + body, 0);
#endif
            if (value == -1.0 && PyErr_Occurred())
                goto error;
            item = PyFloat_FromDouble(value);
            if (item == NULL)
                goto error;
            pos = body + 8;
        }
        else {
            Py_XDECREF(wide);
            char text[8];
            snprintf(text, sizeof(text), "%02x", (unsigned)kind);
            PyErr_Format(DecodeError, "invalid type byte 0x%s", text);
            goto error;
        }
        /* Hand the item to the innermost open list; a list that is now full is itself an item
         * of the list around it. */
        if (items == NULL) {
            if (set_ssize(decoder, ATTR(_pos), pos) < 0 || set_ssize(decoder, ATTR(_needed), 1) < 0 ||
                set_ssize(decoder, ATTR(last_message_items), 1) < 0)
                goto error;
            result = item;
            item = NULL;
            goto done;
        }
        if (PyList_Append(items, item) < 0)
            goto error;
        Py_CLEAR(item);
        remaining--;
        while (!remaining) {
            if (depth == 0) {
                if (set_ssize(decoder, ATTR(_pos), pos) < 0 || set_ssize(decoder, ATTR(_needed), 1) < 0)
                    goto error;
                Py_ssize_t size = base + pos - message_start;
                if (size > message_size_limit) {
                    PyErr_Format(DecodeError,
                                 "Security precaution: a message of more than %zd bytes (%zd at least)",
                                 message_size_limit, size);
                    goto error;
                }
                if (set_ssize(decoder, ATTR(last_message_items), message_items) < 0)
                    goto error;
                result = items;
                items = NULL;
                goto done;
            }
            PyObject *full = items;
            depth--;
            remaining = frames[depth].remaining;
            items = frames[depth].items;
            int appended = PyList_Append(items, full);
            Py_DECREF(full);
            if (appended < 0)
                goto error;
            remaining--;
        }
    }
    /* Out of bytes, or waiting for `needed` of them: keep the open lists for the next call. */
    if (set_ssize(decoder, ATTR(_needed), needed) < 0)
        goto error;
    if (items != NULL) {
        for (Py_ssize_t i = 0; i <= depth; i++) {
            Py_ssize_t count = i < depth ? frames[i].remaining : remaining;
            PyObject *list = i < depth ? frames[i].items : items;
            PyObject *entry = Py_BuildValue("(nO)", count, list);
            if (entry == NULL || PyList_Append(stack_list, entry) < 0) {
                Py_XDECREF(entry);
                goto error;
            }
            Py_DECREF(entry);
        }
        Py_ssize_t size = base + pos - message_start;
        if (size > message_size_limit) {
            PyErr_Format(DecodeError, "Security precaution: a message of more than %zd bytes (%zd at least)",
                         message_size_limit, size);
            goto error;
        }
    }
    if (set_ssize(decoder, ATTR(_message_items), message_items) < 0 || set_ssize(decoder, ATTR(_pos), pos) < 0)
        goto error;
    result = Py_NewRef(NeedData);
    goto done;

error:
    result = NULL;
done:
    Py_XDECREF(item);
    Py_XDECREF(items);
    for (Py_ssize_t i = 0; i < depth; i++)
        Py_DECREF(frames[i].items);
    PyMem_Free(frames);
    Py_DECREF(buffer);
    Py_DECREF(stack_list);
    Py_DECREF(vocabulary);
    return result;
}

/* -------------------------------------------------------------------------------------------
 * unjelly_plain(sexp, depth_limit, hash_budget): jelly.Unjellier(...).unjelly_top(sexp) for an
 * s-expression of plain data (None, boolean, unicode, and list, tuple, dictionary, set,
 * frozenset of them and of banana's atoms, nested), built in one walk in C.  Anything else (a
 * tag it does not know, a malformed expression, a list deeper than depth_limit, an unhashable
 * member) gives NotImplemented, "use the general path", so that the pure path decides the value
 * or the error.  The one error raised here is the pure path's DecodeBudgetExceeded: with a
 * hash_budget (seconds), sets and dicts of _UNTIMED_BELOW members or more are built a piece of
 * _HASH_CHUNK at a time and the thread CPU time of each piece's hashing is charged, exactly as
 * Unjellier._hashed, _frozen and _dictionary charge it.  The caller makes sure the tags mean
 * what they mean by default (no registry took one over, the security options allow them). */

#include <time.h>

#define UNTIMED_BELOW 8 /* jelly._UNTIMED_BELOW */
#define HASH_CHUNK 256  /* jelly._HASH_CHUNK */
/* Deepest nesting walked here whatever depth_limit says (the C stack); deeper declines. */
#define UJ_DEPTH_CAP 1000

static PyObject *BudgetError = NULL; /* trio_pb.errors.DecodeBudgetExceeded */

typedef struct {
    Py_ssize_t depth_limit;
    int timed;      /* whether a budget applies */
    double budget;  /* CPU seconds still allowed */
    int raised;     /* the budget error is set: propagate it rather than decline */
} UCtx;

static inline int
thread_clock(double *out)
{
#ifdef CLOCK_THREAD_CPUTIME_ID
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return -1;
    *out = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    return 0;
#else
    (void)out;
    return -1;
#endif
}

/* Charge the time since began; -1 (the error set, raised marked) once the budget is spent,
 * -1 without raised if the clock cannot be read (the caller declines). */
static int
spend(UCtx *c, double began)
{
    double now;
    if (thread_clock(&now) < 0)
        return -1;
    c->budget -= now - began;
    if (c->budget < 0) {
        PyErr_SetString(BudgetError, "the message costs more work to decode than it is allowed");
        c->raised = 1;
        return -1;
    }
    return 0;
}

static PyObject *uj_value(UCtx *c, PyObject *o, Py_ssize_t level);

static inline int
tag_is(const char *s, Py_ssize_t n, const char *word)
{
    size_t len = strlen(word);
    return (size_t)n == len && memcmp(s, word, len) == 0;
}

/* The items of sexp after its tag, unjellied, as a new list; NULL to decline or raise. */
static PyObject *
uj_items(UCtx *c, PyObject *sexp, Py_ssize_t level)
{
    Py_ssize_t n = PyList_GET_SIZE(sexp) - 1;
    PyObject *items = PyList_New(n);
    if (items == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* Re-read the size: nothing here runs Python code, but stay safe. */
        if (i + 1 >= PyList_GET_SIZE(sexp)) {
            Py_DECREF(items);
            return NULL;
        }
        PyObject *item = uj_value(c, PyList_GET_ITEM(sexp, i + 1), level);
        if (item == NULL) {
            Py_DECREF(items);
            return NULL;
        }
        PyList_SET_ITEM(items, i, item);
    }
    return items;
}

/* A set (frozen or not) of items, timed as Unjellier._hashed and _frozen time it. */
static PyObject *
uj_set(UCtx *c, PyObject *items, int frozen)
{
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (n < UNTIMED_BELOW || !c->timed)
        return frozen ? PyFrozenSet_New(items) : PySet_New(items);
    PyObject *result = PySet_New(NULL);
    if (result == NULL)
        return NULL;
    for (Py_ssize_t start = 0; start < n; start += HASH_CHUNK) {
        Py_ssize_t stop = start + HASH_CHUNK < n ? start + HASH_CHUNK : n;
        double began;
        if (thread_clock(&began) < 0)
            goto fail;
        for (Py_ssize_t i = start; i < stop; i++) {
            if (PySet_Add(result, PyList_GET_ITEM(items, i)) < 0)
                goto fail;
        }
        if (spend(c, began) < 0)
            goto fail;
    }
    if (frozen) {
        double began;
        if (thread_clock(&began) < 0)
            goto fail;
        PyObject *copy = PyFrozenSet_New(result);
        Py_DECREF(result);
        if (copy == NULL)
            return NULL;
        if (spend(c, began) < 0) {
            Py_DECREF(copy);
            return NULL;
        }
        return copy;
    }
    return result;
fail:
    Py_DECREF(result);
    return NULL;
}

/* A dictionary, built a piece of HASH_CHUNK entries at a time as Unjellier._dictionary does:
 * the piece's keys and values unjellied first, then inserted, the insertion timed. */
static PyObject *
uj_dict(UCtx *c, PyObject *sexp, Py_ssize_t level)
{
    Py_ssize_t n = PyList_GET_SIZE(sexp);
    int timed = n > UNTIMED_BELOW && c->timed;
    PyObject *result = PyDict_New();
    if (result == NULL)
        return NULL;
    PyObject *entries[2 * HASH_CHUNK];
    for (Py_ssize_t start = 1; start < n; start += HASH_CHUNK) {
        Py_ssize_t stop = start + HASH_CHUNK < n ? start + HASH_CHUNK : n;
        Py_ssize_t made = 0;
        for (Py_ssize_t i = start; i < stop; i++) {
            if (i >= PyList_GET_SIZE(sexp))
                goto fail_entries;
            PyObject *pair = PyList_GET_ITEM(sexp, i);
            if (!PyList_CheckExact(pair) || PyList_GET_SIZE(pair) != 2)
                goto fail_entries;
            PyObject *key = uj_value(c, PyList_GET_ITEM(pair, 0), level);
            if (key == NULL)
                goto fail_entries;
            entries[made++] = key;
            PyObject *value = uj_value(c, PyList_GET_ITEM(pair, 1), level);
            if (value == NULL)
                goto fail_entries;
            entries[made++] = value;
        }
        double began = 0.0;
        if (timed && thread_clock(&began) < 0)
            goto fail_entries;
        for (Py_ssize_t i = 0; i < made; i += 2) {
            if (PyDict_SetItem(result, entries[i], entries[i + 1]) < 0)
                goto fail_entries;
        }
        for (Py_ssize_t i = 0; i < made; i++)
            Py_DECREF(entries[i]);
        if (timed && spend(c, began) < 0)
            goto fail;
        continue;
    fail_entries:
        for (Py_ssize_t i = 0; i < made; i++)
            Py_DECREF(entries[i]);
        goto fail;
    }
    return result;
fail:
    Py_DECREF(result);
    return NULL;
}

/* The value of o at nesting level (of its parent); a new reference, or NULL to decline (no
 * error set, or one to clear) or raise (c->raised). */
static PyObject *
uj_value(UCtx *c, PyObject *o, Py_ssize_t level)
{
    if (!PyList_CheckExact(o))
        return Py_NewRef(o); /* an atom: unjelly gives it as it is */
    Py_ssize_t n = PyList_GET_SIZE(o);
    level++;
    if (n == 0 || level > c->depth_limit || level > UJ_DEPTH_CAP)
        return NULL;
    PyObject *tag = PyList_GET_ITEM(o, 0);
    if (!PyBytes_CheckExact(tag))
        return NULL;
    const char *s = PyBytes_AS_STRING(tag);
    Py_ssize_t len = PyBytes_GET_SIZE(tag);
    if (tag_is(s, len, "unicode")) {
        PyObject *data = n == 2 ? PyList_GET_ITEM(o, 1) : NULL;
        if (data == NULL || !PyBytes_CheckExact(data))
            return NULL;
        return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), NULL);
    }
    if (tag_is(s, len, "list"))
        return uj_items(c, o, level);
    if (tag_is(s, len, "dictionary"))
        return uj_dict(c, o, level);
    if (tag_is(s, len, "tuple")) {
        PyObject *items = uj_items(c, o, level);
        if (items == NULL)
            return NULL;
        PyObject *result = PyList_AsTuple(items);
        Py_DECREF(items);
        return result;
    }
    if (tag_is(s, len, "None"))
        return n == 1 ? Py_NewRef(Py_None) : NULL;
    if (tag_is(s, len, "boolean")) {
        PyObject *data = n == 2 ? PyList_GET_ITEM(o, 1) : NULL;
        if (data == NULL || !PyBytes_CheckExact(data))
            return NULL;
        const char *d = PyBytes_AS_STRING(data);
        Py_ssize_t dn = PyBytes_GET_SIZE(data);
        if (tag_is(d, dn, "true"))
            return Py_NewRef(Py_True);
        if (tag_is(d, dn, "false"))
            return Py_NewRef(Py_False);
        return NULL;
    }
    int frozen = tag_is(s, len, "frozenset");
    if (frozen || tag_is(s, len, "set")) {
        PyObject *items = uj_items(c, o, level);
        if (items == NULL)
            return NULL;
        PyObject *result = uj_set(c, items, frozen);
        Py_DECREF(items);
        return result;
    }
    return NULL;
}

static PyObject *
unjelly_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "unjelly_plain(sexp, depth_limit, hash_budget)");
        return NULL;
    }
    UCtx c = {0, 0, 0.0, 0};
    c.depth_limit = PyLong_AsSsize_t(args[1]);
    if (c.depth_limit == -1 && PyErr_Occurred())
        return NULL;
    if (args[2] != Py_None) {
        c.budget = PyFloat_AsDouble(args[2]);
        if (c.budget == -1.0 && PyErr_Occurred())
            return NULL;
        c.timed = 1;
    }
    PyObject *result = uj_value(&c, args[0], 0);
    if (result != NULL)
        return result;
    if (c.raised)
        return NULL;
    PyErr_Clear(); /* whatever went wrong, the pure path says it in its own words */
    Py_RETURN_NOTIMPLEMENTED;
}

/* -------------------------------------------------------------------------------------------
 * decode_plain(decoder, depth_limit, hash_budget): one whole `message` or `answer` command of
 * plain data, decoded straight from the decoder's buffer to the objects, with no s-expression
 * lists in between.  It gives what the general path gives, banana's Decoder._parse and then
 * PBProtocol's unjelly of the fields, as a tuple (banana never makes one, so the protocol knows
 * the fields are built): (b"message", request_id, target, name, answer_required, args, kwargs)
 * or (b"answer", request_id, value).  It only starts at the beginning of an expression (the
 * decoder's stack empty), only when the whole command is in the buffer, and declines
 * (NotImplemented, the decoder untouched) on anything else: another command, a field that is
 * not plain data or not of the type the protocol wants, any limit reached (size, prefix, depth,
 * message size and elements), bad UTF-8, an unhashable key, the decode budget spent.  The
 * general path then takes the same bytes and gives the value or the error in its own words, so
 * that no error is ever raised here and every error keeps its class and message.  The budget is
 * charged as unjelly_plain charges it, afresh for each field the protocol unjellies on its own
 * (args, kwargs, an answer). */

typedef struct {
    const unsigned char *buf;
    Py_ssize_t pos, end, start;
    Py_ssize_t size_limit, prefix_limit, banana_depth, message_size_limit, items_limit;
    Py_ssize_t items;
    int short_; /* the bytes ran out (the command is not all here yet) */
    PyObject *vocabulary; /* a tuple, or NULL */
    UCtx u;
    double budget; /* the budget each field starts with */
} DCtx;

/* One element's header: its number (below 2**63) and type byte; 0, or BAIL. */
static inline int
dp_header(DCtx *c, uint64_t *number, unsigned char *kind)
{
    Py_ssize_t pos = c->pos, k = 0;
    const unsigned char *buf = c->buf;
    while (pos + k < c->end && buf[pos + k] < 0x80) {
        if (k >= 9 || k >= c->prefix_limit)
            return BAIL;
        k++;
    }
    if (pos + k >= c->end) {
        c->short_ = 1;
        return BAIL;
    }
    uint64_t n = 0;
    for (Py_ssize_t i = k - 1; i >= 0; i--)
        n = (n << 7) | buf[pos + i];
    *number = n;
    *kind = buf[pos + k];
    c->pos = pos + k + 1;
    return 0;
}

/* The bytes of a string or VOCAB element (a borrowed pointer into the buffer or the table). */
static inline int
dp_word(DCtx *c, uint64_t number, unsigned char kind, const char **s, Py_ssize_t *n)
{
    if (kind == T_STRING) {
        if (number > (uint64_t)c->size_limit)
            return BAIL;
        if ((Py_ssize_t)number > c->end - c->pos) {
            c->short_ = 1;
            return BAIL;
        }
        *s = (const char *)c->buf + c->pos;
        *n = (Py_ssize_t)number;
        c->pos += (Py_ssize_t)number;
        return 0;
    }
    if (kind == T_VOCAB) {
        if (c->vocabulary == NULL || number == 0 || number >= (uint64_t)PyTuple_GET_SIZE(c->vocabulary))
            return BAIL;
        PyObject *word = PyTuple_GET_ITEM(c->vocabulary, (Py_ssize_t)number);
        if (!PyBytes_CheckExact(word))
            return BAIL;
        *s = PyBytes_AS_STRING(word);
        *n = PyBytes_GET_SIZE(word);
        return 0;
    }
    return BAIL;
}

/* A list's header at banana nesting `level`: its count, checked against the limits. */
static inline int
dp_list(DCtx *c, uint64_t number, Py_ssize_t level, Py_ssize_t *count)
{
    if (number > (uint64_t)c->size_limit || level > c->banana_depth || level > UJ_DEPTH_CAP)
        return BAIL;
    c->items += (Py_ssize_t)number;
    if (c->items > c->items_limit)
        return BAIL;
    *count = (Py_ssize_t)number;
    return 0;
}

/* An atom of kind (the header read): a new reference, or NULL (BAIL: not an atom). */
static PyObject *
dp_atom(DCtx *c, uint64_t number, unsigned char kind)
{
    if (kind == T_INT || kind == T_LONGINT)
        return PyLong_FromUnsignedLongLong(number);
    if (kind == T_NEG || kind == T_LONGNEG)
        return PyLong_FromLongLong(-(long long)number); /* number < 2**63 */
    if (kind == T_FLOAT) {
        if (8 > c->end - c->pos) {
            c->short_ = 1;
            return NULL;
        }
        /* A float has no prefix: a zero one is legal banana, anything else is not. */
        if (number != 0)
            return NULL;
#if PY_VERSION_HEX >= 0x030B0000
        double value = PyFloat_Unpack8((const char *)c->buf + c->pos, 0);
#else
        double value = _PyFloat_Unpack8(c->buf + c->pos, 0);
#endif
        if (value == -1.0 && PyErr_Occurred())
            return NULL;
        c->pos += 8;
        return PyFloat_FromDouble(value);
    }
    if (kind == T_STRING || kind == T_VOCAB) {
        const char *s;
        Py_ssize_t n;
        if (kind == T_VOCAB) {
            /* The table's own bytes object, as the banana decoder gives it. */
            if (dp_word(c, number, kind, &s, &n))
                return NULL;
            return Py_NewRef(PyTuple_GET_ITEM(c->vocabulary, (Py_ssize_t)number));
        }
        if (dp_word(c, number, kind, &s, &n))
            return NULL;
        return PyBytes_FromStringAndSize(s, n);
    }
    return NULL;
}

static PyObject *dp_value(DCtx *c, Py_ssize_t level, Py_ssize_t jlevel);

/* n jelly values, at jelly level jlevel (their parent's), as a new list. */
static PyObject *
dp_items(DCtx *c, Py_ssize_t n, Py_ssize_t level, Py_ssize_t jlevel)
{
    /* Grown as items come: a peer's count is not trusted with memory. */
    PyObject *items = PyList_New(0);
    if (items == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = dp_value(c, level, jlevel);
        if (item == NULL || PyList_Append(items, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(items);
            return NULL;
        }
        Py_DECREF(item);
    }
    return items;
}

/* A dictionary of n [key, value] pairs, built HASH_CHUNK entries at a time as uj_dict does. */
static PyObject *
dp_dict(DCtx *c, Py_ssize_t n, Py_ssize_t level, Py_ssize_t jlevel)
{
    int timed = n + 1 > UNTIMED_BELOW && c->u.timed;
    PyObject *result = PyDict_New();
    if (result == NULL)
        return NULL;
    PyObject *entries[2 * HASH_CHUNK];
    for (Py_ssize_t start = 0; start < n; start += HASH_CHUNK) {
        Py_ssize_t stop = start + HASH_CHUNK < n ? start + HASH_CHUNK : n;
        Py_ssize_t made = 0;
        for (Py_ssize_t i = start; i < stop; i++) {
            uint64_t number;
            unsigned char kind;
            Py_ssize_t count;
            if (dp_header(c, &number, &kind) || kind != T_LIST || number != 2 ||
                dp_list(c, number, level + 1, &count))
                goto fail_entries;
            PyObject *key = dp_value(c, level + 1, jlevel);
            if (key == NULL)
                goto fail_entries;
            entries[made++] = key;
            PyObject *value = dp_value(c, level + 1, jlevel);
            if (value == NULL)
                goto fail_entries;
            entries[made++] = value;
        }
        double began = 0.0;
        if (timed && thread_clock(&began) < 0)
            goto fail_entries;
        for (Py_ssize_t i = 0; i < made; i += 2) {
            if (PyDict_SetItem(result, entries[i], entries[i + 1]) < 0)
                goto fail_entries;
        }
        for (Py_ssize_t i = 0; i < made; i++)
            Py_DECREF(entries[i]);
        if (timed && spend(&c->u, began) < 0)
            goto fail;
        continue;
    fail_entries:
        for (Py_ssize_t i = 0; i < made; i++)
            Py_DECREF(entries[i]);
        goto fail;
    }
    return result;
fail:
    Py_DECREF(result);
    return NULL;
}

/* The next jelly value, inside a banana list at `level` and a jelly list at `jlevel`: a new
 * reference, or NULL to decline (an error may be set: the caller clears it). */
static PyObject *
dp_value(DCtx *c, Py_ssize_t level, Py_ssize_t jlevel)
{
    uint64_t number;
    unsigned char kind;
    if (dp_header(c, &number, &kind))
        return NULL;
    if (kind != T_LIST)
        return dp_atom(c, number, kind);
    Py_ssize_t n;
    level++;
    jlevel++;
    if (dp_list(c, number, level, &n) || n == 0 || jlevel > c->u.depth_limit || jlevel > UJ_DEPTH_CAP)
        return NULL;
    const char *s;
    Py_ssize_t len;
    if (dp_header(c, &number, &kind) || dp_word(c, number, kind, &s, &len))
        return NULL;
    n--; /* the items after the tag */
    if (tag_is(s, len, "list"))
        return dp_items(c, n, level, jlevel);
    if (tag_is(s, len, "dictionary"))
        return dp_dict(c, n, level, jlevel);
    if (tag_is(s, len, "tuple")) {
        PyObject *items = dp_items(c, n, level, jlevel);
        if (items == NULL)
            return NULL;
        PyObject *result = PyList_AsTuple(items);
        Py_DECREF(items);
        return result;
    }
    if (tag_is(s, len, "unicode")) {
        if (n != 1 || dp_header(c, &number, &kind) || kind != T_STRING || dp_word(c, number, kind, &s, &len))
            return NULL;
        return PyUnicode_DecodeUTF8(s, len, NULL);
    }
    if (tag_is(s, len, "None"))
        return n == 0 ? Py_NewRef(Py_None) : NULL;
    if (tag_is(s, len, "boolean")) {
        if (n != 1 || dp_header(c, &number, &kind) || dp_word(c, number, kind, &s, &len))
            return NULL;
        if (tag_is(s, len, "true"))
            return Py_NewRef(Py_True);
        if (tag_is(s, len, "false"))
            return Py_NewRef(Py_False);
        return NULL;
    }
    int frozen = tag_is(s, len, "frozenset");
    if (frozen || tag_is(s, len, "set")) {
        PyObject *items = dp_items(c, n, level, jlevel);
        if (items == NULL)
            return NULL;
        PyObject *result = uj_set(&c->u, items, frozen);
        Py_DECREF(items);
        return result;
    }
    return NULL;
}

/* An int field of the command (a request id, the answer flag). */
static PyObject *
dp_int(DCtx *c)
{
    uint64_t number;
    unsigned char kind;
    if (dp_header(c, &number, &kind) || !(kind == T_INT || kind == T_LONGINT || kind == T_NEG || kind == T_LONGNEG))
        return NULL;
    return dp_atom(c, number, kind);
}

/* A field the protocol unjellies on its own, with a budget of its own. */
static PyObject *
dp_field(DCtx *c)
{
    c->u.budget = c->budget;
    return dp_value(c, 1, 0);
}

/* The command at c->start, built: a new tuple, or NULL to decline (c->short_ set if the bytes
 * ran out). */
static PyObject *
dp_build(DCtx *c)
{
    PyObject *result = NULL, *head = NULL, *f[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    uint64_t number;
    unsigned char kind;
    Py_ssize_t count;
    const char *s;
    Py_ssize_t len;
    int nfields;
    c->pos = c->start;
    c->items = 1;
    c->short_ = 0;
    if (dp_header(c, &number, &kind) || kind != T_LIST || (number != 7 && number != 3))
        goto done;
    if (dp_list(c, number, 1, &count) || dp_header(c, &number, &kind) || dp_word(c, number, kind, &s, &len))
        goto done;
    if (count == 7 && tag_is(s, len, "message")) {
        nfields = 6;
        if ((f[0] = dp_int(c)) == NULL)
            goto done;
        /* The target: an int or bytes (anything else, the general path fails the call). */
        if (dp_header(c, &number, &kind) || kind == T_LIST || kind == T_FLOAT ||
            (f[1] = dp_atom(c, number, kind)) == NULL)
            goto done;
        if (dp_header(c, &number, &kind) || (kind != T_STRING && kind != T_VOCAB) ||
            (f[2] = dp_atom(c, number, kind)) == NULL)
            goto done;
        if ((f[3] = dp_int(c)) == NULL)
            goto done;
        if ((f[4] = dp_field(c)) == NULL || !PyTuple_CheckExact(f[4]))
            goto done;
        if ((f[5] = dp_field(c)) == NULL || !PyDict_CheckExact(f[5]))
            goto done;
        head = Py_NewRef(message_head);
    }
    else if (count == 3 && tag_is(s, len, "answer")) {
        nfields = 2;
        if ((f[0] = dp_int(c)) == NULL || (f[1] = dp_field(c)) == NULL)
            goto done;
        head = Py_NewRef(answer_head);
    }
    else {
        goto done;
    }
    if (head == NULL || c->pos - c->start > c->message_size_limit)
        goto done;
    result = PyTuple_New(nfields + 1);
    if (result == NULL)
        goto done;
    PyTuple_SET_ITEM(result, 0, head);
    head = NULL;
    for (int i = 0; i < nfields; i++) {
        PyTuple_SET_ITEM(result, i + 1, f[i]);
        f[i] = NULL;
    }
done:
    Py_XDECREF(head);
    for (int i = 0; i < 6; i++)
        Py_XDECREF(f[i]);
    return result;
}

/* A command that is not all here yet.  Parsing it again from its start on every read would cost
 * the square of its size (a peer sending a byte at a time), so what arrives is only scanned,
 * the scan resumed where it stopped: the headers' limits checked as Decoder._parse checks them,
 * string bodies skipped, nothing built.  Its state lives in the decoder's _plain_scan, a list
 * [start, scanned, seen, items, remaining...] (stream offsets: where the command starts, how far
 * it is scanned, how far the bytes went at the last scan; the elements counted; the items still
 * expected by each open list, outermost first).  The command is built once the scan finds its
 * end.  The scan declines (and the general path parses the command, consuming it) on anything
 * the general path would raise on or that cannot be plain, and when a read brings less than a
 * sixteenth of what is buffered: each byte is then copied into the decoder's buffer (which
 * holds the command from its start until it is built) a bounded number of times. */

#define SCAN_GROWTH 16
#define SCAN_DONE 2
/* Bytes buffered past which a command's first read is scanned before it is built. */
#define SCAN_FIRST_ABOVE (16 * 1024)

/* SCAN_DONE: the command is complete in the buffer; 0: NEED_DATA (state saved, *needed set: bytes from
 * the command's start); BAIL: decline; -1: error. */
static int
dp_scan(DCtx *c, PyObject *decoder, Py_ssize_t base, Py_ssize_t *needed)
{
    PyObject *state = PyObject_GetAttr(decoder, ATTR(_plain_scan));
    if (state == NULL)
        return -1;
    Py_ssize_t start = c->start, p = start, seen = base + c->end, items = 0, depth = 0;
    Py_ssize_t stack[UJ_DEPTH_CAP + 1];
    int resumed = 0;
    if (PyList_CheckExact(state) && PyList_GET_SIZE(state) >= 4 &&
        PyList_GET_SIZE(state) - 4 <= UJ_DEPTH_CAP) {
        Py_ssize_t v[4];
        for (int i = 0; i < 4; i++)
            v[i] = PyLong_AsSsize_t(PyList_GET_ITEM(state, i));
        if (!PyErr_Occurred() && v[0] == base + start && v[1] >= v[0] && v[1] <= seen && v[2] <= seen) {
            /* Too little since the last scan: the general path takes the command. */
            if ((seen - v[2]) * SCAN_GROWTH < v[2] - v[0]) {
                Py_DECREF(state);
                return BAIL;
            }
            p = v[1] - base;
            items = v[3];
            depth = PyList_GET_SIZE(state) - 4;
            for (Py_ssize_t i = 0; i < depth; i++) {
                stack[i] = PyLong_AsSsize_t(PyList_GET_ITEM(state, i + 4));
                if (stack[i] <= 0)
                    depth = -1;
            }
            resumed = depth > 0 && !PyErr_Occurred();
        }
        PyErr_Clear();
    }
    Py_DECREF(state);
    if (!resumed) {
        p = start;
        items = 0;
        depth = 0;
    }
    const unsigned char *buf = c->buf;
    Py_ssize_t need = 0;
    for (;;) {
        if (p - start > c->message_size_limit)
            return BAIL;
        /* The prefix, at most prefix_limit (and 9) bytes, then the type byte. */
        Py_ssize_t k = 0;
        while (p + k < c->end && buf[p + k] < 0x80) {
            if (k >= 9 || k >= c->prefix_limit)
                return BAIL;
            k++;
        }
        if (p + k >= c->end) {
            need = c->end - start + 1;
            break;
        }
        uint64_t number = 0;
        for (Py_ssize_t i = k - 1; i >= 0; i--)
            number = (number << 7) | buf[p + i];
        unsigned char kind = buf[p + k];
        Py_ssize_t body = p + k + 1;
        if (depth == 0 && (kind != T_LIST || (number != 7 && number != 3)))
            return BAIL; /* not a message or answer */
        if (kind == T_LIST) {
            if (number > (uint64_t)c->size_limit)
                return BAIL;
            items += depth == 0 ? 1 + (Py_ssize_t)number : (Py_ssize_t)number;
            if (items > c->items_limit)
                return BAIL;
            p = body;
            if (number) {
                if (depth >= c->banana_depth || depth >= UJ_DEPTH_CAP)
                    return BAIL;
                stack[depth++] = (Py_ssize_t)number;
                continue;
            }
        }
        else if (kind == T_STRING) {
            if (number > (uint64_t)c->size_limit)
                return BAIL;
            if ((Py_ssize_t)number > c->end - body) {
                if (body - start > c->message_size_limit - (Py_ssize_t)number)
                    return BAIL;
                need = body + (Py_ssize_t)number - start;
                break;
            }
            p = body + (Py_ssize_t)number;
        }
        else if (kind == T_VOCAB) {
            if (c->vocabulary == NULL || number == 0 || number >= (uint64_t)PyTuple_GET_SIZE(c->vocabulary))
                return BAIL;
            p = body;
        }
        else if (kind == T_INT || kind == T_LONGINT || kind == T_NEG || kind == T_LONGNEG) {
            p = body;
        }
        else if (kind == T_FLOAT) {
            if (number != 0)
                return BAIL;
            if (8 > c->end - body) {
                need = body + 8 - start;
                break;
            }
            p = body + 8;
        }
        else {
            return BAIL;
        }
        /* An element is complete: so may be the lists around it. */
        while (depth > 0 && --stack[depth - 1] == 0)
            depth--;
        if (depth == 0)
            return p - start > c->message_size_limit ? BAIL : SCAN_DONE;
    }
    if (c->end - start > c->message_size_limit)
        return BAIL;
    PyObject *saved = PyList_New(4 + depth);
    if (saved == NULL)
        return -1;
    Py_ssize_t head[4] = {base + start, base + p, seen, items};
    for (Py_ssize_t i = 0; i < 4 + depth; i++) {
        PyObject *n = PyLong_FromSsize_t(i < 4 ? head[i] : stack[i - 4]);
        if (n == NULL) {
            Py_DECREF(saved);
            return -1;
        }
        PyList_SET_ITEM(saved, i, n);
    }
    int r = PyObject_SetAttr(decoder, ATTR(_plain_scan), saved);
    Py_DECREF(saved);
    if (r < 0)
        return -1;
    *needed = need;
    return 0;
}

static PyObject *
decode_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "decode_plain(decoder, depth_limit, hash_budget)");
        return NULL;
    }
    PyObject *decoder = args[0];
    DCtx c;
    memset(&c, 0, sizeof(c));
    c.u.depth_limit = PyLong_AsSsize_t(args[1]);
    if (c.u.depth_limit == -1 && PyErr_Occurred())
        return NULL;
    if (args[2] != Py_None) {
        c.budget = PyFloat_AsDouble(args[2]);
        if (c.budget == -1.0 && PyErr_Occurred())
            return NULL;
        c.u.timed = 1;
    }
    Py_ssize_t pos, base;
    int r;
    if ((r = read_exact_limit(decoder, ATTR(_pos), &pos)) || (r = read_exact_limit(decoder, ATTR(_base), &base)) ||
        (r = read_exact_limit(decoder, ATTR(size_limit), &c.size_limit)) ||
        (r = read_exact_limit(decoder, ATTR(prefix_limit), &c.prefix_limit)) ||
        (r = read_exact_limit(decoder, ATTR(depth_limit), &c.banana_depth)) ||
        (r = read_exact_limit(decoder, ATTR(message_size_limit), &c.message_size_limit)) ||
        (r = read_exact_limit(decoder, ATTR(message_items_limit), &c.items_limit))) {
        if (r < 0)
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    const Py_ssize_t big = (Py_ssize_t)1 << 61;
    if (pos < 0 || base < 0 || pos > big || base > big || c.items_limit > big)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *buffer = PyObject_GetAttr(decoder, ATTR(_buffer));
    if (buffer == NULL)
        return NULL;
    PyObject *stack_list = PyObject_GetAttr(decoder, ATTR(_stack));
    PyObject *vocabulary = PyObject_GetAttr(decoder, ATTR(vocabulary));
    PyObject *result = NULL;
    if (stack_list == NULL || vocabulary == NULL)
        goto done;
    if (!PyBytes_CheckExact(buffer) || !PyList_CheckExact(stack_list) || PyList_GET_SIZE(stack_list) ||
        (vocabulary != Py_None && !PyTuple_CheckExact(vocabulary)) || pos > PyBytes_GET_SIZE(buffer))
        goto decline;
    c.buf = (const unsigned char *)PyBytes_AS_STRING(buffer);
    c.pos = c.start = pos;
    c.end = PyBytes_GET_SIZE(buffer);
    c.vocabulary = vocabulary == Py_None ? NULL : vocabulary;

    /* A command scanned in part on an earlier read: scan on, and build it once it is all here.
     * Otherwise build it now (scanned first if the buffer is big); if it is not all here yet,
     * start scanning it. */
    PyObject *state = PyObject_GetAttr(decoder, ATTR(_plain_scan));
    if (state == NULL)
        goto done;
    int pending = state != Py_None;
    Py_DECREF(state);
    Py_ssize_t needed = 1;
    if (pending || c.end - c.start > SCAN_FIRST_ABOVE) {
        /* Scanned on from an earlier read; or a big buffer, which may be the first read of a
         * bigger command: scanning it first (building nothing) saves building part of it only to
         * throw that away when the buffer runs out. */
        int r = dp_scan(&c, decoder, base, &needed);
        if (r < 0)
            goto done;
        if (r == BAIL)
            goto decline;
        if (r == 0)
            goto wait;
        if (PyObject_SetAttr(decoder, ATTR(_plain_scan), Py_None) < 0)
            goto done;
    }
    result = dp_build(&c);
    if (result == NULL) {
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception))
            goto done; /* KeyboardInterrupt and the like are not a decline */
        PyErr_Clear();
        if (!c.short_)
            goto decline;
        int r = dp_scan(&c, decoder, base, &needed);
        if (r < 0)
            goto done;
        if (r != 0)
            goto decline;
        goto wait;
    }
    if (set_ssize(decoder, ATTR(_pos), c.pos) < 0 || set_ssize(decoder, ATTR(_needed), 1) < 0 ||
        set_ssize(decoder, ATTR(_message_start), base + c.start) < 0 ||
        set_ssize(decoder, ATTR(_message_items), c.items) < 0 ||
        set_ssize(decoder, ATTR(last_message_items), c.items) < 0)
        Py_CLEAR(result);
    goto done;

wait:
    /* Nothing consumed: the command stays in the buffer from its start. */
    if (set_ssize(decoder, ATTR(_needed), needed) < 0)
        goto done;
    result = Py_NewRef(NeedData);
    goto done;

decline:
    /* Whatever went wrong, the general path says it in its own words. */
    PyErr_Clear();
    if (PyObject_SetAttr(decoder, ATTR(_plain_scan), Py_None) < 0)
        goto done;
    result = Py_NewRef(Py_NotImplemented);
done:
    Py_DECREF(buffer);
    Py_XDECREF(stack_list);
    Py_XDECREF(vocabulary);
    return result;
}

static PyMethodDef methods[] = {
    {"encode_plain", (PyCFunction)(void (*)(void))encode_plain, METH_FASTCALL,
     "encode_plain(encoder, value): banana.encode(jelly.jelly(value)) in the encoder's dialect, "
     "or None if value is not plain data."},
    {"encode_message", (PyCFunction)(void (*)(void))encode_message, METH_FASTCALL,
     "encode_message(encoder, head, values): the list of head's atoms and each value's jelly, "
     "encoded, or None if a value is not plain data."},
    {"decode_parse", decode_parse, METH_O,
     "decode_parse(decoder): what decoder._parse() returns, the next expression or NEED_DATA."},
    {"unjelly_plain", (PyCFunction)(void (*)(void))unjelly_plain, METH_FASTCALL,
     "unjelly_plain(sexp, depth_limit, hash_budget): what Unjellier.unjelly_top(sexp) gives for "
     "plain data, or NotImplemented for anything else."},
    {"decode_plain", (PyCFunction)(void (*)(void))decode_plain, METH_FASTCALL,
     "decode_plain(decoder, depth_limit, hash_budget): the next message or answer command of "
     "plain data as a tuple, decoded straight from the bytes, or NotImplemented."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "trio_pb._speedups", "trio_pb's compiled codec (optional).", -1, methods,
};

static PyObject *
import_name(const char *module_name, const char *name)
{
    PyObject *module = PyImport_ImportModule(module_name);
    if (module == NULL)
        return NULL;
    PyObject *value = PyObject_GetAttrString(module, name);
    Py_DECREF(module);
    return value;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (intern_names() < 0)
        return NULL;
    if (DecodeError == NULL && (DecodeError = import_name("trio_pb.errors", "BananaDecodeError")) == NULL)
        return NULL;
    if (NeedData == NULL && (NeedData = import_name("trio_pb._events", "NEED_DATA")) == NULL)
        return NULL;
    if (BudgetError == NULL && (BudgetError = import_name("trio_pb.errors", "DecodeBudgetExceeded")) == NULL)
        return NULL;
    return PyModule_Create(&module_def);
}
