// Status and Result<T>: how expected failures cross module boundaries.
//
// Bugs abort through CLEAVE_CHECK. Everything that can go wrong because of the outside world
// (a malformed file, a bad request, a lost peer) returns a Status or a Result<T> that the caller
// must look at. The HTTP layer maps codes to status codes (kInvalidArgument -> 400, ...).
#pragma once

#include <fmt/format.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace cleave {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller's input is wrong (bad request, bad flag)
  kNotFound,            // a named thing (file, key, tensor, model) does not exist
  kDataLoss,            // a file or frame is corrupt or truncated
  kOutOfRange,          // a value or length is outside what is allowed
  kUnimplemented,       // valid input that cleave does not support (yet)
  kResourceExhausted,   // a limit was hit (queue full, memory)
  kUnavailable,         // a peer or worker is gone; retrying elsewhere may help
  kDeadlineExceeded,    // a timeout
  kCancelled,           // the caller gave up
  kFailedPrecondition,  // the system is not in a state to do this (e.g. still loading)
  kUnauthenticated,     // missing or wrong credentials
  kInternal,            // our own bug surfaced as an error instead of a crash
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: message", or "OK".
  std::string ToString() const;
  // Returns a copy whose message is "context: message" (same code).
  Status WithContext(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Shorthands: InvalidArgument("bad value {}", v).
#define CLEAVE_DEFINE_STATUS_MAKER(Name)                                                  \
  template <typename... Args>                                                             \
  Status Name(fmt::format_string<Args...> format, Args&&... args) {                       \
    return Status(StatusCode::k##Name, fmt::format(format, std::forward<Args>(args)...)); \
  }
CLEAVE_DEFINE_STATUS_MAKER(InvalidArgument)
CLEAVE_DEFINE_STATUS_MAKER(NotFound)
CLEAVE_DEFINE_STATUS_MAKER(DataLoss)
CLEAVE_DEFINE_STATUS_MAKER(OutOfRange)
CLEAVE_DEFINE_STATUS_MAKER(Unimplemented)
CLEAVE_DEFINE_STATUS_MAKER(ResourceExhausted)
CLEAVE_DEFINE_STATUS_MAKER(Unavailable)
CLEAVE_DEFINE_STATUS_MAKER(DeadlineExceeded)
CLEAVE_DEFINE_STATUS_MAKER(Cancelled)
CLEAVE_DEFINE_STATUS_MAKER(FailedPrecondition)
CLEAVE_DEFINE_STATUS_MAKER(Unauthenticated)
CLEAVE_DEFINE_STATUS_MAKER(Internal)
#undef CLEAVE_DEFINE_STATUS_MAKER

[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const std::string& message);

// Either a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : value_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(value_).ok())
      CheckFailed(__FILE__, __LINE__, "!status.ok()", "Result from OK status");
  }

  bool ok() const { return std::holds_alternative<T>(value_); }
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(value_); }

  T& value() & {
    EnsureOk();
    return std::get<T>(value_);
  }
  const T& value() const& {
    EnsureOk();
    return std::get<T>(value_);
  }
  T&& value() && {
    EnsureOk();
    return std::get<T>(std::move(value_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void EnsureOk() const {
    if (!ok()) CheckFailed(__FILE__, __LINE__, "ok()", std::get<Status>(value_).ToString());
  }
  std::variant<T, Status> value_;
};

}  // namespace cleave

#define CLEAVE_STATUS_CONCAT_INNER(a, b) a##b
#define CLEAVE_STATUS_CONCAT(a, b) CLEAVE_STATUS_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` (a Status) is not OK.
#define CLEAVE_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::cleave::Status cleave_status_ = (expr);        \
    if (!cleave_status_.ok()) return cleave_status_; \
  } while (0)

// `CLEAVE_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a Result or returns its Status.
#define CLEAVE_ASSIGN_OR_RETURN(lhs, expr) \
  CLEAVE_ASSIGN_OR_RETURN_IMPL(CLEAVE_STATUS_CONCAT(cleave_result_, __LINE__), lhs, expr)
#define CLEAVE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

// Aborts with a message when a programming invariant is broken.
// CLEAVE_CHECK(n > 0) or CLEAVE_CHECK(n > 0, "n was {}", n).
#define CLEAVE_CHECK(cond, ...)                                                              \
  do {                                                                                       \
    if (!(cond)) [[unlikely]]                                                                \
      ::cleave::CheckFailed(__FILE__, __LINE__, #cond, ::cleave::CheckMessage(__VA_ARGS__)); \
  } while (0)

namespace cleave {
inline std::string CheckMessage() {
  return {};
}
template <typename... Args>
std::string CheckMessage(fmt::format_string<Args...> format, Args&&... args) {
  return fmt::format(format, std::forward<Args>(args)...);
}
}  // namespace cleave
