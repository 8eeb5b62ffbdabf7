#include "weights/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/weights/test_util.h"

namespace ds::weights {
namespace {

using testing::ScratchDir;

// A file image: 8-byte little-endian header length, header text, data.
std::vector<std::byte> image(const std::string& header, size_t data_bytes, uint64_t declared = UINT64_MAX) {
  const uint64_t n = declared == UINT64_MAX ? header.size() : declared;
  std::vector<std::byte> out(8 + header.size() + data_bytes, std::byte{0});
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

std::string parse_error(const std::vector<std::byte>& bytes) {
  try {
    parse_safetensors(bytes, "bad.safetensors");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, WriteReadRoundTrip) {
  ScratchDir dir("st");
  std::vector<uint16_t> a = {1, 2, 3, 4, 5, 6};
  std::vector<float> b = {1.5f, -2.f};
  std::vector<uint8_t> c = {7};
  write_safetensors(dir / "x.safetensors",
                    {{"a", DType::BF16, {2, 3}, std::as_bytes(std::span(a))},
                     {"b", DType::F32, {2}, std::as_bytes(std::span(b))},
                     {"empty", DType::I64, {0, 4}, {}},
                     {"c", DType::F8_E4M3, {1, 1, 1}, std::as_bytes(std::span(c))}},
                    {{"format", "pt"}});
  SafetensorsFile file(dir / "x.safetensors");
  ASSERT_EQ(file.tensors().size(), 4u);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  std::map<std::string, const TensorView*> by_name;
  for (const auto& t : file.tensors()) by_name[t.name] = &t;
  EXPECT_EQ(by_name["a"]->dtype, DType::BF16);
  EXPECT_EQ(by_name["a"]->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(by_name["a"]->bytes.data(), a.data(), 12), 0);
  EXPECT_EQ(std::memcmp(by_name["b"]->bytes.data(), b.data(), 8), 0);
  EXPECT_EQ(by_name["empty"]->numel(), 0);
  EXPECT_EQ(by_name["c"]->bytes.size(), 1u);
  file.release_pages(by_name["a"]->bytes);  // harmless; the data stays readable
  EXPECT_EQ(std::memcmp(by_name["a"]->bytes.data(), a.data(), 12), 0);
}

TEST(Safetensors, WriterRejectsSizeMismatchAndDuplicates) {
  ScratchDir dir("stw");
  std::vector<uint16_t> a = {1, 2, 3};
  EXPECT_THROW(write_safetensors(dir / "x.safetensors", {{"a", DType::BF16, {2, 2}, std::as_bytes(std::span(a))}}),
               std::invalid_argument);
  EXPECT_THROW(write_safetensors(dir / "y.safetensors", {{"a", DType::BF16, {3}, std::as_bytes(std::span(a))},
                                                         {"a", DType::BF16, {3}, std::as_bytes(std::span(a))}}),
               std::invalid_argument);
}

TEST(Safetensors, TruncatedFile) {
  std::vector<std::byte> bytes(5);
  EXPECT_NE(parse_error(bytes).find("truncated"), std::string::npos);
}

TEST(Safetensors, HeaderLengthPastEnd) {
  auto bytes = image("{}", 0, 1000);
  EXPECT_NE(parse_error(bytes).find("past the end of the file"), std::string::npos) << parse_error(bytes);
}

TEST(Safetensors, HeaderLengthOverCap) {
  auto bytes = image("{}", 0, kMaxSafetensorsHeaderBytes + 1);
  EXPECT_NE(parse_error(bytes).find("limit"), std::string::npos) << parse_error(bytes);
}

TEST(Safetensors, InvalidJson) {
  auto bytes = image("{\"a\": {", 0);
  EXPECT_NE(parse_error(bytes).find("not valid JSON"), std::string::npos);
  EXPECT_NE(parse_error(image("[1, 2]", 0)).find("not a JSON object"), std::string::npos);
}

TEST(Safetensors, OverlappingOffsets) {
  auto bytes = image(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6);
  const std::string error = parse_error(bytes);
  EXPECT_NE(error.find("overlaps"), std::string::npos) << error;
  EXPECT_NE(error.find("\"b\""), std::string::npos) << error;
}

TEST(Safetensors, GappedOffsets) {
  auto bytes = image(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})", 8);
  const std::string error = parse_error(bytes);
  EXPECT_NE(error.find("gap"), std::string::npos) << error;
  EXPECT_NE(error.find("\"b\""), std::string::npos) << error;
}

TEST(Safetensors, TrailingAndMissingData) {
  auto trailing = image(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 6);
  EXPECT_NE(parse_error(trailing).find("trailing"), std::string::npos) << parse_error(trailing);
  auto short_data = image(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 2);
  EXPECT_NE(parse_error(short_data).find("past the end of the data"), std::string::npos) << parse_error(short_data);
}

TEST(Safetensors, UnknownDtype) {
  auto bytes = image(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8);
  const std::string error = parse_error(bytes);
  EXPECT_NE(error.find("unknown dtype \"F64\""), std::string::npos) << error;
  EXPECT_NE(error.find("\"w\""), std::string::npos) << error;
}

TEST(Safetensors, ShapeSizeMismatch) {
  auto bytes = image(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]}})", 4);
  const std::string error = parse_error(bytes);
  EXPECT_NE(error.find("byte size 4"), std::string::npos) << error;
  EXPECT_NE(error.find("bad.safetensors"), std::string::npos) << error;
}

TEST(Safetensors, BadFieldTypes) {
  EXPECT_NE(parse_error(image(R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", 0)).find("non-negative"),
            std::string::npos);
  EXPECT_NE(parse_error(image(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1)).find("data_offsets"),
            std::string::npos);
  EXPECT_NE(parse_error(image(R"({"w":5})", 0)).find("not a JSON object"), std::string::npos);
  EXPECT_NE(parse_error(image(R"({"__metadata__":{"k":1}})", 0)).find("__metadata__"), std::string::npos);
  EXPECT_NE(parse_error(image(R"({"w":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,0]}})", 0))
                .find("overflows"),
            std::string::npos);
}

TEST(Safetensors, FileErrorsNameThePath) {
  ScratchDir dir("stf");
  {
    std::ofstream out(dir / "short.safetensors", std::ios::binary);
    out << "abc";
  }
  try {
    SafetensorsFile file(dir / "short.safetensors");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("short.safetensors"), std::string::npos);
  }
  EXPECT_THROW(SafetensorsFile(dir / "missing.safetensors"), std::runtime_error);
}

// Mutates a valid header (bytes flipped, inserted, deleted, truncated; numbers changed; the
// length field changed) and parses each result: it must either parse or throw runtime_error,
// never crash (run under -DDELTASERVE_SANITIZE=ON for ASan/UBSan).
TEST(Safetensors, FuzzedHeadersNeverCrash) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},"c":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[20,24]}})";
  const auto valid = image(header, 24);
  ASSERT_EQ(parse_safetensors(valid, "valid").tensors.size(), 3u);
  std::mt19937_64 rng(12345);
  const std::string interesting = "{}[]\":,0123456789-e.E ";
  int parsed = 0, rejected = 0;
  for (int iteration = 0; iteration < 20000; ++iteration) {
    std::vector<std::byte> bytes = valid;
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations; ++m) {
      const size_t pos = rng() % bytes.size();
      switch (rng() % 7) {
        case 0: bytes[pos] = static_cast<std::byte>(rng() & 0xff); break;
        case 1: bytes[pos] = static_cast<std::byte>(interesting[rng() % interesting.size()]); break;
        case 2: bytes.insert(bytes.begin() + pos, static_cast<std::byte>(interesting[rng() % interesting.size()])); break;
        case 3: bytes.erase(bytes.begin() + pos); break;
        case 4: bytes.resize(pos); break;
        case 5: bytes[rng() % 8] = static_cast<std::byte>(rng() & 0xff); break;  // header length
        default: {  // a digit becomes a huge number
          const std::string big = "18446744073709551615";
          if (pos >= 8 && std::isdigit(static_cast<int>(bytes[pos]))) {
            bytes.erase(bytes.begin() + pos);
            for (size_t k = 0; k < big.size(); ++k) bytes.insert(bytes.begin() + pos + k, static_cast<std::byte>(big[k]));
          }
        }
      }
      if (bytes.empty()) break;
    }
    try {
      auto parsed_header = parse_safetensors(bytes, "fuzz");
      for (const auto& t : parsed_header.tensors) {
        // Every accepted view lies inside the image.
        ASSERT_GE(t.bytes.data(), bytes.data());
        ASSERT_LE(t.bytes.data() + t.bytes.size(), bytes.data() + bytes.size());
      }
      ++parsed;
    } catch (const std::runtime_error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 10000);
  EXPECT_GT(parsed, 0);
}

}  // namespace
}  // namespace ds::weights
