#include "dtype.h"
#include <string.h>

size_t dsa_dtype_size(dsa_dtype t) {
    switch (t) {
    case DSA_F32: return 4;
    case DSA_F64: return 8;
    case DSA_BF16: return 2;
    case DSA_I32: return 4;
    case DSA_I64: return 8;
    case DSA_U8: return 1;
    default: return 0;
    }
}

const char *dsa_dtype_name(dsa_dtype t) {
    static const char *names[] = {"f32", "f64", "bf16", "i32", "i64", "u8"};
    return (t >= 0 && t < DSA_NUM_DTYPES) ? names[t] : "?";
}

const char *dsa_device_name(dsa_device d) { return d == DSA_CUDA ? "cuda" : "cpu"; }

int dsa_dtype_is_float(dsa_dtype t) { return t == DSA_F32 || t == DSA_F64 || t == DSA_BF16; }

uint16_t dsa_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return (uint16_t)((u >> 16) | 0x40); // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float dsa_bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
