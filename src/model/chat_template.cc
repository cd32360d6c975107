#include "model/chat_template.h"
