#include "error.h"
#include <stdarg.h>
#include <string.h>

static _Thread_local dsa_status g_status = DSA_OK;
static _Thread_local char g_message[2048];

dsa_status dsa_error_set(dsa_status s, const char *fmt, ...) {
    if (g_status != DSA_OK) return s; // keep the first (root-cause) error
    g_status = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_message, sizeof g_message, fmt, ap);
    va_end(ap);
    return s;
}

void dsa_error_context(const char *fmt, ...) {
    if (g_status == DSA_OK) return;
    char prefix[512], old[sizeof g_message];
    // The combined message is cut at the buffer size; the root cause stays at the end.
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_message, sizeof old);
    snprintf(g_message, sizeof g_message, "%.500s: %.1500s", prefix, old);
}

dsa_status dsa_error_status(void) { return g_status; }
const char *dsa_error_message(void) { return g_status == DSA_OK ? "no error" : g_message; }
void dsa_error_clear(void) { g_status = DSA_OK; g_message[0] = 0; }

const char *dsa_status_name(dsa_status s) {
    switch (s) {
    case DSA_OK: return "ok";
    case DSA_ERR_SHAPE: return "shape error";
    case DSA_ERR_DTYPE: return "dtype error";
    case DSA_ERR_DEVICE: return "device error";
    case DSA_ERR_INDEX: return "index error";
    case DSA_ERR_VALUE: return "value error";
    case DSA_ERR_IO: return "I/O error";
    case DSA_ERR_MEMORY: return "out of memory";
    case DSA_ERR_CUDA: return "CUDA error";
    case DSA_ERR_CONFIG: return "config error";
    case DSA_ERR_UNSUPPORTED: return "unsupported";
    case DSA_ERR_COMM: return "communication error";
    case DSA_ERR_STATE: return "state error";
    }
    return "unknown error";
}
