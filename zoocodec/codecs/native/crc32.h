// CRC32 (zlib's: polynomial 0xEDB88320, reflected), so a decode pass checks a payload's
// chunks on its own threads instead of handing them to Python's (zoocodec/container.py).
#pragma once
#include <cstddef>
#include <cstdint>

namespace zc {

// crc32(crc, data, n) continues `crc` as zlib.crc32(data, crc) does (start from 0).
uint32_t crc32(uint32_t crc, const uint8_t* data, std::size_t n);

}  // namespace zc
