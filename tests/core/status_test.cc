#include "core/status.h"

#include <gtest/gtest.h>

#include <memory>

namespace cleave {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgument("{} is odd", x);
  return x / 2;
}

Result<int> Quarter(int x) {
  CLEAVE_ASSIGN_OR_RETURN(int h, Half(x));
  CLEAVE_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckEven(int x) {
  CLEAVE_RETURN_IF_ERROR(Half(x).status());
  return Status::Ok();
}

TEST(StatusTest, OkAndError) {
  EXPECT_TRUE(Status::Ok().ok());
  Status s = NotFound("key {} missing", "abc");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "NOT_FOUND: key abc missing");
  EXPECT_EQ(s.WithContext("loading").message(), "loading: key abc missing");
}

TEST(StatusTest, ResultPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  Result<int> r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "3 is odd");
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(5).code(), StatusCode::kInvalidArgument);
}

TEST(StatusTest, ResultHoldsMoveOnly) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

TEST(StatusDeathTest, CheckAborts) {
  EXPECT_DEATH(CLEAVE_CHECK(1 + 1 == 3, "math is {}", "broken"), "math is broken");
  Result<int> r = Half(3);
  EXPECT_DEATH((void)r.value(), "3 is odd");
}

}  // namespace
}  // namespace cleave
