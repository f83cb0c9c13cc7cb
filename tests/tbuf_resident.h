/* tbuf_resident.h — for the recorder's memory tests: how many packets of a thread buffer
 * have a page in core (mincore(2)), read through the recorder's internals. */
#ifndef HT_TEST_TBUF_RESIDENT_H
#define HT_TEST_TBUF_RESIDENT_H

#include "trace/internal.h"

#include <stdbool.h>
#include <stdio.h>
#include <sys/mman.h>

/* Packets of the buffer at `packets` with at least one page in core; when it cannot tell
 * (mincore fails), more than any buffer has, so that every check of "few" fails. */
#define TBUF_RESIDENT_UNKNOWN (1u << 20)

static inline unsigned tbuf_resident_packets(uint8_t *packets)
{
    size_t pages = ht__rec.packet_size / HT_PAGE_SIZE;
    unsigned char vec[4096];
    if (pages > sizeof vec)
        return TBUF_RESIDENT_UNKNOWN;
    unsigned n = 0;
    for (unsigned p = 0; p < ht__rec.n_packets; p++) {
        if (mincore(packets + (size_t)p * ht__rec.packet_size, ht__rec.packet_size, vec) != 0) {
            perror("mincore");
            return TBUF_RESIDENT_UNKNOWN;
        }
        bool in = false;
        for (size_t i = 0; i < pages; i++)
            in = in || (vec[i] & 1u) != 0;
        n += in;
    }
    return n;
}

#endif
