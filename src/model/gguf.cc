// Placeholder so the model layer links while the reader is being written.
#include "model/gguf.h"
