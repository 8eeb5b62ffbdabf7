// Hugging Face tokenizers runs its pre-tokenizer regexes through a bundled Oniguruma with
// Unicode 16 property tables; Debian 12's libonig (6.9.8) has Unicode 14 tables. The only
// difference that matters to tokenizer patterns is that letters and digits assigned in Unicode
// 15-16 (CJK Extensions H and I, Egyptian Hieroglyphs Extended-A, Garay, Kawi, Todhri, ...) are
// not \p{L} / \p{N} to the older library, which changes how text around them splits.
// widen_unicode_properties rewrites \p{L} and \p{N} (inside and outside character classes) to
// also include those code points, so splitting agrees with Hugging Face whatever libonig is
// installed (the union is harmless when the tables are already new).
#pragma once

#include <string>
#include <string_view>

namespace ds::server {

std::string widen_unicode_properties(std::string_view pattern);

}  // namespace ds::server
