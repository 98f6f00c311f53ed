# cython: language_level=3
# Shared C types and tiny inline helpers for the kernels in native/*.pyx (cimport from "_types").
# Formats are fixed on purpose (house style C): int16 PCM, uint8 G.711 codes, float32 internally.

from libc.stdint cimport int16_t, int32_t, uint8_t, uint16_t, uint32_t

ctypedef int16_t pcm16_t    # one 16-bit two's-complement PCM sample
ctypedef uint8_t code8_t    # one G.711 code (u-law or A-law)
ctypedef float sample_t     # float32 working sample (resampler, VAD)


cdef inline int16_t clip_int16(int32_t x) noexcept nogil:
    # Saturate to the int16 range (e.g. after rounding a float32 result).
    if x > 32767:
        return 32767
    if x < -32768:
        return -32768
    return <int16_t>x


cdef inline uint16_t load_le16(const unsigned char* p) noexcept nogil:
    # Little-endian 16-bit load from a byte pointer: alignment- and host-endianness-safe
    # (compilers turn it into a single load on little-endian hosts).
    return <uint16_t>(p[0] | (<uint16_t>p[1] << 8))


cdef inline void store_le16(unsigned char* p, uint16_t v) noexcept nogil:
    # Little-endian 16-bit store to a byte pointer (see load_le16).
    p[0] = <unsigned char>(v & 0xFF)
    p[1] = <unsigned char>(v >> 8)
