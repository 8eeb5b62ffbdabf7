// `deltaserve gen-model`: writes a complete checkpoint folder in a published layout.
// `deltaserve check-model`: validates a checkpoint folder and times loading every rank of a TP size.
#pragma once

namespace CLI {
class App;
}

namespace ds::weights {

void add_gen_model_command(CLI::App& app);  // registers gen-model and check-model

}  // namespace ds::weights
