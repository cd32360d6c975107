// libFuzzer target for the OpenAI request parser: arbitrary bytes as an HTTP body go through
// ParseJsonBody and both request parsers. Nothing may crash, hang or leak; every rejection must
// be a 4xx with a message, and every accepted request must be within the limits.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/openai_protocol.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

void CheckParsed(const cleave::server::ApiError& e, const cleave::server::ApiRequest& r,
                 const cleave::server::ProtocolLimits& limits) {
  if (!e.ok()) {
    Check(e.http_status >= 400 && e.http_status < 500 && !e.message.empty());
    (void)e.ToJsonString();
    return;
  }
  Check(r.n >= 1 && r.n <= limits.max_n);
  Check(!r.max_tokens || (*r.max_tokens >= 1 && *r.max_tokens <= limits.max_tokens));
  Check(r.params.logprobs <= limits.max_logprobs);
  for (const auto& p : r.prompts) {
    for (int32_t t : p.tokens) Check(t >= 0 && t < limits.vocab_size);
  }
  for (const auto& [t, bias] : r.params.logit_bias) Check(t >= 0 && t < limits.vocab_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cleave::server::ProtocolLimits limits;
  limits.vocab_size = 49152;
  limits.max_tokens = 8192;
  std::string_view body(reinterpret_cast<const char*>(data), size);
  nlohmann::json j;
  cleave::server::ApiError e = cleave::server::ParseJsonBody(body, limits.max_json_depth, &j);
  if (!e.ok()) {
    Check(e.http_status == 400);
    return 0;
  }
  cleave::server::ApiRequest r;
  CheckParsed(cleave::server::ParseChatRequest(j, limits, &r), r, limits);
  CheckParsed(cleave::server::ParseCompletionRequest(j, limits, &r), r, limits);
  return 0;
}
