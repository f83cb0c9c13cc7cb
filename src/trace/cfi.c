/* cfi.c — the .eh_frame_hdr / .eh_frame parser of the own x86-64 DWARF unwinder: finds the
 * FDE of a pc by the header's binary-search table, decodes its CIE and runs the CFA program
 * (the opcodes compilers emit for x86-64; see DWARF 5 §6.4 and the LSB's .eh_frame) up to the
 * pc. Its input is untrusted bytes (a fuzzer feeds it, fuzz/fuzz_cfi.c): every read is
 * bounds-checked, every loop is bounded, and anything it does not model answers
 * HT_CFI_UNSUPPORTED rather than a guess. Pure: no globals, no malloc, no syscalls. */
#include "trace/cfi.h"

#include <string.h>

/* A cursor over [p, end) whose byte at p had address addr in the process. */
typedef struct cur {
    const uint8_t *p, *end;
    uint64_t addr; /* process address of *p (for pc-relative pointers) */
    bool bad;      /* a read ran past end */
} cur;

static inline size_t cur_left(const cur *c)
{
    return (size_t)(c->end - c->p);
}

static inline void cur_skip(cur *c, uint64_t n)
{
    if (c->bad || n > cur_left(c)) {
        c->bad = true;
        c->p = c->end;
        return;
    }
    c->p += n;
    c->addr += n;
}

static uint64_t rd_le(cur *c, unsigned size)
{
    if (c->bad || cur_left(c) < size) {
        c->bad = true;
        c->p = c->end;
        return 0;
    }
    uint64_t v = 0;
    for (unsigned i = 0; i < size; i++)
        v |= (uint64_t)c->p[i] << (8 * i);
    c->p += size;
    c->addr += size;
    return v;
}

/* A LEB128 number; sign-extended when is_signed (then cast to int64_t by rd_sleb). */
static uint64_t rd_leb(cur *c, bool is_signed)
{
    uint64_t v = 0;
    for (unsigned shift = 0;; shift += 7) {
        if (c->bad || c->p == c->end || shift > 63) {
            c->bad = true;
            return 0;
        }
        uint8_t b = *c->p++;
        c->addr++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            if (is_signed && shift + 7 < 64 && (b & 0x40) != 0)
                v |= ~(uint64_t)0 << (shift + 7);
            return v;
        }
    }
}

static inline uint64_t rd_uleb(cur *c)
{
    return rd_leb(c, false);
}

static inline int64_t rd_sleb(cur *c)
{
    return (int64_t)rd_leb(c, true);
}

/* DW_EH_PE pointer of encoding enc. data_base resolves datarel; false for what we do not
 * support (indirect, textrel, funcrel, aligned, omit). */
static bool rd_encoded(cur *c, uint8_t enc, uint64_t data_base, uint64_t *out)
{
    uint64_t field = c->addr, v;
    switch (enc & 0x0f) {
    case 0x00: /* absptr */
    case 0x04: /* udata8 */
    case 0x0c: /* sdata8 */
        v = rd_le(c, 8);
        break;
    case 0x01: /* uleb128 */
        v = rd_uleb(c);
        break;
    case 0x09: /* sleb128 */
        v = (uint64_t)rd_sleb(c);
        break;
    case 0x02: /* udata2 */
        v = rd_le(c, 2);
        break;
    case 0x0a: /* sdata2 */
        v = (uint64_t)(int64_t)(int16_t)rd_le(c, 2);
        break;
    case 0x03: /* udata4 */
        v = rd_le(c, 4);
        break;
    case 0x0b: /* sdata4 */
        v = (uint64_t)(int64_t)(int32_t)rd_le(c, 4);
        break;
    default:
        return false;
    }
    switch (enc & 0xf0) {
    case 0x00:
        break;
    case 0x10: /* pcrel */
        v += field;
        break;
    case 0x30: /* datarel */
        v += data_base;
        break;
    default:
        return false;
    }
    *out = v;
    return !c->bad;
}

bool ht__cfi_read_pointer(const uint8_t *p, size_t size, uint64_t addr, uint8_t enc,
                          uint64_t data_base, uint64_t *out, size_t *used)
{
    cur c = {p, p + size, addr, false};
    if (!rd_encoded(&c, enc, data_base, out))
        return false;
    *used = (size_t)(c.p - p);
    return true;
}

/* -- CIE ----------------------------------------------------------------------------------- */

typedef struct cie {
    uint64_t code_align; /* factor of advance_loc */
    int64_t data_align;  /* factor of offsets */
    uint64_t ra_reg;     /* return address column (16 on x86-64) */
    uint8_t fde_enc;     /* 'R': encoding of the FDE's pc_begin and pc_range */
    bool has_z;          /* 'z': FDEs carry augmentation data to skip */
    bool signal;         /* 'S': a signal frame (unsupported) */
    cur insns;           /* initial instructions */
} cie;

/* One length-prefixed entry (CIE or FDE) at offset off of the image's .eh_frame: the cursor
 * over its body (after the length). False when it does not fit, is the terminator, or uses
 * the 64-bit length form (never produced for .eh_frame on Linux). */
static bool entry_at(const ht_cfi_image *img, uint64_t off, cur *body)
{
    if (off > img->eh_size || img->eh_size - off < 4)
        return false;
    cur c = {img->eh + off, img->eh + img->eh_size, img->eh_addr + off, false};
    uint64_t len = rd_le(&c, 4);
    if (len == 0 || len >= 0xfffffff0u || len > cur_left(&c))
        return false;
    *body = c;
    body->end = c.p + len;
    return true;
}

static bool cie_parse(const ht_cfi_image *img, uint64_t off, cie *out)
{
    cur c;
    if (!entry_at(img, off, &c))
        return false;
    if (rd_le(&c, 4) != 0) /* CIE id: 0 in .eh_frame */
        return false;
    uint64_t version = rd_le(&c, 1);
    if (version != 1 && version != 3 && version != 4)
        return false;
    const uint8_t *aug = c.p;
    size_t aug_len = 0;
    while (aug_len < cur_left(&c) && aug[aug_len] != 0)
        aug_len++;
    if (aug_len == cur_left(&c) || aug_len > 8)
        return false;
    cur_skip(&c, aug_len + 1);
    if (version == 4) {
        if (rd_le(&c, 1) != 8 || rd_le(&c, 1) != 0) /* address size, segment selector size */
            return false;
    }
    memset(out, 0, sizeof *out);
    out->code_align = rd_uleb(&c);
    out->data_align = rd_sleb(&c);
    out->ra_reg = version == 1 ? rd_le(&c, 1) : rd_uleb(&c);
    out->fde_enc = 0; /* absptr */
    const uint8_t *aug_end = NULL;
    for (size_t i = 0; i < aug_len; i++) {
        char a = (char)aug[i];
        if (i == 0 && a == 'z') {
            uint64_t n = rd_uleb(&c);
            if (c.bad || n > cur_left(&c))
                return false;
            aug_end = c.p + n;
            out->has_z = true;
        } else if (a == 'R') {
            out->fde_enc = (uint8_t)rd_le(&c, 1);
        } else if (a == 'L') {
            (void)rd_le(&c, 1); /* LSDA encoding: the LSDA is not needed to unwind */
        } else if (a == 'P') {
            uint8_t enc = (uint8_t)rd_le(&c, 1);
            uint64_t ignored;
            /* the personality routine may be indirect (0x80): the pointer's size is all we
             * need to skip it */
            if (!rd_encoded(&c, enc & 0x7f, 0, &ignored))
                return false;
        } else if (a == 'S') {
            out->signal = true;
        } else if (a == 'B' || a == 'G') {
            /* AArch64 / MTE markers: no data */
        } else if (aug_end != NULL) {
            break; /* unknown with 'z': the length lets us skip the rest */
        } else {
            return false;
        }
    }
    if (aug_end != NULL) {
        if (aug_end < c.p || aug_end > c.end)
            return false;
        cur_skip(&c, (uint64_t)(aug_end - c.p));
    }
    if (c.bad || out->code_align == 0)
        return false;
    out->insns = c;
    return true;
}

/* -- the CFA program ----------------------------------------------------------------------- */

/* a * b with two's-complement wrap-around (factored offsets of hostile input overflow). */
static inline int64_t mul_wrap(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a * (uint64_t)b);
}

/* The rules of one row, only for the registers x86-64 unwinding to the next frame needs. */
enum { R_SAME, R_UNDEF, R_OFFSET, R_OTHER }; /* rule kinds for rbp and ra */

typedef struct row {
    uint64_t cfa_reg;
    int64_t cfa_off;
    bool cfa_expr; /* DW_CFA_def_cfa_expression */
    uint8_t rbp_kind, ra_kind;
    int64_t rbp_off, ra_off;
} row;

#define STATE_STACK 8u     /* remember_state depth */
#define MAX_INSNS   65536u /* instructions interpreted per lookup */

typedef struct interp {
    row cur;                /* the row being built */
    row init;               /* after the CIE's instructions (DW_CFA_restore) */
    row stack[STATE_STACK]; /* remember_state */
    unsigned depth;         /* entries used in stack */
    uint64_t loc;           /* address the current row starts at */
    bool unsupported;       /* an opcode or rule we do not model touched rbp, ra or the CFA */
} interp;

static void rule_set(interp *in, uint64_t reg, uint8_t kind, int64_t off, const cie *ci)
{
    if (reg == HT_CFI_REG_RBP) {
        in->cur.rbp_kind = kind;
        in->cur.rbp_off = off;
    }
    if (reg == ci->ra_reg) {
        in->cur.ra_kind = kind;
        in->cur.ra_off = off;
    }
}

static void rule_restore(interp *in, uint64_t reg, const cie *ci)
{
    if (reg == HT_CFI_REG_RBP) {
        in->cur.rbp_kind = in->init.rbp_kind;
        in->cur.rbp_off = in->init.rbp_off;
    }
    if (reg == ci->ra_reg) {
        in->cur.ra_kind = in->init.ra_kind;
        in->cur.ra_off = in->init.ra_off;
    }
}

/* Runs instructions until the row that covers pc is complete (an advance past pc) or the
 * program ends. fde_enc is needed for DW_CFA_set_loc. False on malformed input. */
static bool run(interp *in, cur c, const cie *ci, uint64_t pc, bool in_cie)
{
    for (unsigned n = 0; n < MAX_INSNS && cur_left(&c) > 0; n++) {
        uint8_t op = (uint8_t)rd_le(&c, 1);
        uint64_t delta = 0, reg, a;
        bool advance = false;
        switch (op >> 6) {
        case 1: /* DW_CFA_advance_loc */
            delta = op & 0x3f;
            advance = true;
            break;
        case 2: /* DW_CFA_offset */
            rule_set(in, op & 0x3f, R_OFFSET, mul_wrap((int64_t)rd_uleb(&c), ci->data_align), ci);
            break;
        case 3: /* DW_CFA_restore */
            rule_restore(in, op & 0x3f, ci);
            break;
        default:
            switch (op) {
            case 0x00: /* nop */
                break;
            case 0x01: /* set_loc */
                if (!rd_encoded(&c, ci->fde_enc, 0, &a))
                    return false;
                if (a > pc)
                    return true;
                in->loc = a;
                break;
            case 0x02: /* advance_loc1 */
                delta = rd_le(&c, 1);
                advance = true;
                break;
            case 0x03: /* advance_loc2 */
                delta = rd_le(&c, 2);
                advance = true;
                break;
            case 0x04: /* advance_loc4 */
                delta = rd_le(&c, 4);
                advance = true;
                break;
            case 0x05: /* offset_extended */
                reg = rd_uleb(&c);
                rule_set(in, reg, R_OFFSET, mul_wrap((int64_t)rd_uleb(&c), ci->data_align), ci);
                break;
            case 0x06: /* restore_extended */
                rule_restore(in, rd_uleb(&c), ci);
                break;
            case 0x07: /* undefined */
                rule_set(in, rd_uleb(&c), R_UNDEF, 0, ci);
                break;
            case 0x08: /* same_value */
                rule_set(in, rd_uleb(&c), R_SAME, 0, ci);
                break;
            case 0x09: /* register */
                reg = rd_uleb(&c);
                (void)rd_uleb(&c);
                rule_set(in, reg, R_OTHER, 0, ci);
                break;
            case 0x0a: /* remember_state */
                if (in->depth == STATE_STACK)
                    return false;
                in->stack[in->depth++] = in->cur;
                break;
            case 0x0b: /* restore_state: the CFA rule is restored too (DWARF 5 §6.4.2.4) */
                if (in->depth == 0)
                    return false;
                in->cur = in->stack[--in->depth];
                break;
            case 0x0c: /* def_cfa */
                in->cur.cfa_reg = rd_uleb(&c);
                in->cur.cfa_off = (int64_t)rd_uleb(&c);
                in->cur.cfa_expr = false;
                break;
            case 0x0d: /* def_cfa_register */
                in->cur.cfa_reg = rd_uleb(&c);
                in->cur.cfa_expr = false;
                break;
            case 0x0e: /* def_cfa_offset */
                in->cur.cfa_off = (int64_t)rd_uleb(&c);
                break;
            case 0x0f: /* def_cfa_expression */
                cur_skip(&c, rd_uleb(&c));
                in->cur.cfa_expr = true;
                break;
            case 0x10: /* expression */
            case 0x16: /* val_expression */
                reg = rd_uleb(&c);
                cur_skip(&c, rd_uleb(&c));
                rule_set(in, reg, R_OTHER, 0, ci);
                break;
            case 0x11: /* offset_extended_sf */
                reg = rd_uleb(&c);
                rule_set(in, reg, R_OFFSET, mul_wrap(rd_sleb(&c), ci->data_align), ci);
                break;
            case 0x12: /* def_cfa_sf */
                in->cur.cfa_reg = rd_uleb(&c);
                in->cur.cfa_off = mul_wrap(rd_sleb(&c), ci->data_align);
                in->cur.cfa_expr = false;
                break;
            case 0x13: /* def_cfa_offset_sf */
                in->cur.cfa_off = mul_wrap(rd_sleb(&c), ci->data_align);
                break;
            case 0x14: /* val_offset */
                reg = rd_uleb(&c);
                (void)rd_uleb(&c);
                rule_set(in, reg, R_OTHER, 0, ci);
                break;
            case 0x15: /* val_offset_sf */
                reg = rd_uleb(&c);
                (void)rd_sleb(&c);
                rule_set(in, reg, R_OTHER, 0, ci);
                break;
            case 0x2e: /* GNU_args_size: only matters when resuming into a landing pad */
                (void)rd_uleb(&c);
                break;
            case 0x2f: /* GNU_negative_offset_extended */
                reg = rd_uleb(&c);
                rule_set(in, reg, R_OFFSET, mul_wrap((int64_t)(0 - rd_uleb(&c)), ci->data_align),
                         ci);
                break;
            default: /* DW_CFA_GNU_window_save, vendor opcodes, garbage */
                in->unsupported = true;
                return true;
            }
        }
        if (c.bad)
            return false;
        if (advance) {
            if (in_cie)
                return false; /* a CIE's initial instructions have no locations */
            uint64_t next = in->loc + delta * ci->code_align;
            if (next > pc || next < in->loc)
                return true; /* the current row covers pc */
            in->loc = next;
        }
    }
    return !c.bad && cur_left(&c) == 0;
}

/* -- lookup -------------------------------------------------------------------------------- */

/* The FDE offset in .eh_frame for pc from the header's table, or false. */
static bool hdr_lookup(const ht_cfi_image *img, uint64_t pc, uint64_t *fde_off)
{
    if (img->hdr_size < 4)
        return false;
    const uint8_t *h = img->hdr;
    if (h[0] != 1 || h[3] != 0x3b) /* version 1; table of datarel sdata4 pairs */
        return false;
    cur c = {h + 4, h + img->hdr_size, img->hdr_addr + 4, false};
    uint64_t eh_ptr, count;
    if (!rd_encoded(&c, h[1], img->hdr_addr, &eh_ptr) ||
        !rd_encoded(&c, h[2], img->hdr_addr, &count))
        return false;
    if (count == 0 || count > cur_left(&c) / 8)
        return false;
    const uint8_t *table = c.p;
    size_t lo = 0, hi = (size_t)count; /* the last entry whose start <= pc */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        int32_t s;
        memcpy(&s, table + 8 * mid, 4);
        if (img->hdr_addr + (uint64_t)(int64_t)s <= pc)
            lo = mid;
        else
            hi = mid;
    }
    int32_t s, f;
    memcpy(&s, table + 8 * lo, 4);
    memcpy(&f, table + 8 * lo + 4, 4);
    if (img->hdr_addr + (uint64_t)(int64_t)s > pc)
        return false;
    uint64_t fde = img->hdr_addr + (uint64_t)(int64_t)f;
    if (fde < img->eh_addr || fde - img->eh_addr >= img->eh_size)
        return false;
    *fde_off = fde - img->eh_addr;
    return true;
}

ht_cfi_status ht__cfi_find(const ht_cfi_image *img, uint64_t pc, ht_cfi_rule *rule)
{
    uint64_t fde_off;
    if (!hdr_lookup(img, pc, &fde_off))
        return HT_CFI_NO_FDE;
    cur c;
    if (!entry_at(img, fde_off, &c))
        return HT_CFI_BAD;
    uint64_t id_field = fde_off + 4; /* offset of the CIE pointer */
    uint64_t cie_ptr = rd_le(&c, 4);
    if (c.bad || cie_ptr == 0 || cie_ptr > id_field)
        return HT_CFI_BAD; /* 0 would make this a CIE */
    cie ci;
    if (!cie_parse(img, id_field - cie_ptr, &ci))
        return HT_CFI_BAD;
    uint64_t pc_begin, pc_range;
    if (!rd_encoded(&c, ci.fde_enc, 0, &pc_begin) ||
        !rd_encoded(&c, ci.fde_enc & 0x0f, 0, &pc_range))
        return HT_CFI_BAD;
    if (pc < pc_begin || pc - pc_begin >= pc_range)
        return HT_CFI_NO_FDE;
    if (ci.has_z)
        cur_skip(&c, rd_uleb(&c));
    if (c.bad)
        return HT_CFI_BAD;
    if (ci.signal)
        return HT_CFI_UNSUPPORTED;

    interp in;
    memset(&in, 0, sizeof in);
    in.cur.cfa_reg = HT_CFI_REG_RSP;
    in.cur.rbp_kind = R_SAME;
    in.cur.ra_kind = R_UNDEF; /* set by the CIE (DW_CFA_offset r16) */
    if (!run(&in, ci.insns, &ci, pc, true))
        return HT_CFI_BAD;
    in.init = in.cur;
    in.depth = 0;
    in.loc = pc_begin;
    if (!in.unsupported && !run(&in, c, &ci, pc, false))
        return HT_CFI_BAD;
    if (in.unsupported)
        return HT_CFI_UNSUPPORTED;
    const row *r = &in.cur;
    if (r->ra_kind == R_UNDEF)
        return HT_CFI_OUTERMOST;
    if (r->cfa_expr || (r->cfa_reg != HT_CFI_REG_RSP && r->cfa_reg != HT_CFI_REG_RBP) ||
        r->ra_kind != R_OFFSET || (r->rbp_kind != R_SAME && r->rbp_kind != R_OFFSET))
        return HT_CFI_UNSUPPORTED;
    if (r->ra_off >= 0 || (r->rbp_kind == R_OFFSET && r->rbp_off >= 0))
        return HT_CFI_UNSUPPORTED; /* saved registers live below the CFA */
    rule->cfa_reg = (uint8_t)r->cfa_reg;
    rule->cfa_off = r->cfa_off;
    rule->ra_off = r->ra_off;
    rule->rbp_off = r->rbp_kind == R_OFFSET ? r->rbp_off : 0;
    return HT_CFI_OK;
}

const char *ht__cfi_status_name(ht_cfi_status st)
{
    static const char *const names[] = {"ok", "outermost", "unsupported", "no-fde", "bad"};
    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "?";
}

uint64_t ht__cfi_encode(uintptr_t ra, ht_cfi_status st, const ht_cfi_rule *rule)
{
    if ((uint64_t)ra >> 47 != 0)
        return 0;
    uint64_t tag = (uint64_t)(ra >> HT_CFI_CACHE_BITS) << 32;
    switch (st) {
    case HT_CFI_OK:
        break;
    case HT_CFI_OUTERMOST:
        return tag | (uint64_t)HT_CFI_W_OUTER << 26;
    default:
        return tag | (uint64_t)HT_CFI_W_UNSUP << 26;
    }
    if (rule->ra_off != -8 || rule->cfa_off < 8 || rule->cfa_off > 0x7FFFF)
        return tag | (uint64_t)HT_CFI_W_UNSUP << 26;
    uint64_t k = 0;
    if (rule->rbp_off != 0) {
        if (rule->rbp_off % 8 != 0 || rule->rbp_off < -8 * 63)
            return tag | (uint64_t)HT_CFI_W_UNSUP << 26;
        k = (uint64_t)(-rule->rbp_off / 8);
    }
    return tag | (uint64_t)HT_CFI_W_NORMAL << 26 |
           (rule->cfa_reg == HT_CFI_REG_RBP ? HT_CFI_W_RBPCFA : 0) | k << 19 |
           (uint64_t)rule->cfa_off;
}
