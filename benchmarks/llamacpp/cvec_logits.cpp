// cvec_logits: next-token logits and greedy continuations from llama.cpp itself, with
// llama.cpp's own control-vector path.
//
// Our own arguments all start with --cvl- and are removed before the rest of the command line
// goes unchanged to llama.cpp's common_params_parse (the same parser llama-cli/llama-completion
// use), so -m, -t, -c, --control-vector FILE, --control-vector-scaled FILE:SCALE,
// --control-vector-layer-range START END, ... behave exactly as there. The model, context and
// control vector are set up by common_init_from_params (common_control_vector_load +
// llama_set_adapter_cvec); nothing here reads the control-vector GGUF itself.
//
//   cvec_logits --cvl-prompts IDS.txt --cvl-out PREFIX [--cvl-steps K] -m model.gguf [common args]
//
//   IDS.txt        one prompt per line, space-separated token ids (no BOS is added; put it in
//                  the ids if you want one). Empty lines are skipped.
//   PREFIX.f32     N x n_vocab float32, row-major: logits at the last prompt position
//   PREFIX.json    {"n_vocab", "n_prompts", "steps", "greedy": [[ids]...], "timing": {...}, ...}
//   K              greedy (argmax) tokens generated after each prompt (default 4; 0 allowed);
//                  the first is the argmax of the row written to PREFIX.f32.
//
// Each prompt runs in a cleared KV cache, as sequence 0 starting at position 0. Threads default
// to 2 (override with -t); n_ctx defaults to the longest prompt + K rounded up (override -c).

#include "arg.h"
#include "common.h"
#include "llama.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

static int fail(const char * msg) {
    fprintf(stderr, "cvec_logits: error: %s\n", msg);
    return 1;
}

static bool decode_tokens(llama_context * ctx, const std::vector<llama_token> & toks, int pos0) {
    llama_batch batch = llama_batch_init((int32_t) toks.size(), 0, 1);
    for (size_t i = 0; i < toks.size(); i++) {
        batch.token[i]     = toks[i];
        batch.pos[i]       = pos0 + (llama_pos) i;
        batch.n_seq_id[i]  = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i]    = (i + 1 == toks.size()) ? 1 : 0;
    }
    batch.n_tokens = (int32_t) toks.size();
    const int32_t rc = llama_decode(ctx, batch);
    llama_batch_free(batch);
    if (rc != 0) {
        fprintf(stderr, "cvec_logits: llama_decode returned %d\n", rc);
    }
    return rc == 0;
}

static llama_token argmax(const float * v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) {
        if (v[i] > v[best]) {
            best = i;
        }
    }
    return best;
}

int main(int argc, char ** argv) {
    std::string prompts_path, out_prefix;
    int steps = 4;

    // split off our own --cvl-* arguments
    std::vector<char *> rest = {argv[0]};
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a.rfind("--cvl-", 0) == 0) {
            if (i + 1 >= argc) {
                return fail(("missing value for " + a).c_str());
            }
            std::string v = argv[++i];
            if (a == "--cvl-prompts") {
                prompts_path = v;
            } else if (a == "--cvl-out") {
                out_prefix = v;
            } else if (a == "--cvl-steps") {
                steps = std::atoi(v.c_str());
            } else {
                return fail(("unknown argument " + a).c_str());
            }
        } else {
            rest.push_back(argv[i]);
        }
    }
    if (prompts_path.empty() || out_prefix.empty() || steps < 0) {
        fprintf(stderr,
                "usage: %s --cvl-prompts IDS.txt --cvl-out PREFIX [--cvl-steps K] -m MODEL.gguf "
                "[--control-vector F | --control-vector-scaled F:S] [--control-vector-layer-range A B] "
                "[other llama.cpp common args]\n",
                argv[0]);
        return 2;
    }

    // read prompts
    std::vector<std::vector<llama_token>> prompts;
    {
        std::ifstream f(prompts_path);
        if (!f) {
            return fail(("cannot open " + prompts_path).c_str());
        }
        std::string line;
        while (std::getline(f, line)) {
            std::istringstream ss(line);
            std::vector<llama_token> row;
            long long t;
            while (ss >> t) {
                row.push_back((llama_token) t);
            }
            if (!ss.eof()) {
                return fail(("non-integer token in " + prompts_path).c_str());
            }
            if (!row.empty()) {
                prompts.push_back(std::move(row));
            }
        }
    }
    if (prompts.empty()) {
        return fail("no prompts");
    }
    size_t max_len = 0;
    for (auto & p : prompts) {
        max_len = std::max(max_len, p.size());
    }

    common_params params;
    params.cpuparams.n_threads       = 2;
    params.cpuparams_batch.n_threads = 2;
    params.n_ctx                     = 0;
    params.warmup                    = false;
    int rest_argc = (int) rest.size();
    rest.push_back(nullptr);
    if (!common_params_parse(rest_argc, rest.data(), params, LLAMA_EXAMPLE_COMPLETION)) {
        return fail("llama.cpp argument parsing failed (see above)");
    }
    const int need = (int) max_len + steps + 1;
    if (params.n_ctx == 0) {
        params.n_ctx = std::max(256, ((need + 255) / 256) * 256);
    } else if (params.n_ctx < need) {
        return fail("context (-c) smaller than the longest prompt + steps");
    }
    params.n_batch  = std::max<int32_t>(params.n_batch, (int32_t) max_len);
    params.fit_params = false;  // CPU; keep our n_ctx as is

    common_init();
    llama_backend_init();
    llama_numa_init(params.numa);

    const double t_load0 = now_s();
    common_init_result_ptr init = common_init_from_params(params);
    llama_model *   model = init->model();
    llama_context * ctx   = init->context();
    if (model == nullptr || ctx == nullptr) {
        return fail("could not load the model / create the context");
    }
    const double t_load = now_s() - t_load0;

    // common_init_from_params logs and returns (context still set) when the control vector fails
    // to load or apply; detect that with llama.cpp's own loader rather than going on unsteered.
    const int n_embd  = llama_model_n_embd(model);
    const int n_layer = llama_model_n_layer(model);
    if (!params.control_vectors.empty()) {
        const auto cv = common_control_vector_load(params.control_vectors);
        if (cv.n_embd != n_embd) {
            return fail("control vector did not load or does not match the model's n_embd (see log above)");
        }
    }

    const llama_vocab * vocab   = llama_model_get_vocab(model);
    const int           n_vocab = llama_vocab_n_tokens(vocab);
    for (auto & p : prompts) {
        for (auto t : p) {
            if (t < 0 || t >= n_vocab) {
                return fail("token id out of range for this vocabulary");
            }
        }
    }

    std::vector<float>                    all_logits((size_t) prompts.size() * n_vocab);
    std::vector<std::vector<llama_token>> greedy(prompts.size());
    double t_prompt = 0.0, t_gen = 0.0;
    long long n_prompt_tok = 0, n_gen_tok = 0;

    llama_memory_t mem = llama_get_memory(ctx);
    for (size_t p = 0; p < prompts.size(); p++) {
        llama_memory_clear(mem, true);
        const auto & toks = prompts[p];
        double t0 = now_s();
        if (!decode_tokens(ctx, toks, 0)) {
            return fail("decode failed on a prompt");
        }
        const float * lg = llama_get_logits_ith(ctx, -1);
        if (lg == nullptr) {
            return fail("no logits");
        }
        std::memcpy(all_logits.data() + p * n_vocab, lg, sizeof(float) * n_vocab);
        t_prompt += now_s() - t0;
        n_prompt_tok += (long long) toks.size();

        t0 = now_s();
        int pos = (int) toks.size();
        for (int k = 0; k < steps; k++) {
            const llama_token next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
            greedy[p].push_back(next);
            if (k + 1 < steps) {
                if (!decode_tokens(ctx, {next}, pos++)) {
                    return fail("decode failed while generating");
                }
                n_gen_tok++;
            }
        }
        t_gen += now_s() - t0;
    }

    // write outputs
    {
        const std::string fn = out_prefix + ".f32";
        FILE * f = fopen(fn.c_str(), "wb");
        if (!f) {
            return fail(("cannot write " + fn).c_str());
        }
        if (fwrite(all_logits.data(), sizeof(float), all_logits.size(), f) != all_logits.size()) {
            fclose(f);
            return fail(("short write to " + fn).c_str());
        }
        fclose(f);
    }
    {
        const std::string fn = out_prefix + ".json";
        FILE * f = fopen(fn.c_str(), "w");
        if (!f) {
            return fail(("cannot write " + fn).c_str());
        }
        fprintf(f, "{\n  \"n_vocab\": %d,\n  \"n_prompts\": %zu,\n  \"steps\": %d,\n", n_vocab, prompts.size(), steps);
        fprintf(f, "  \"n_embd\": %d,\n  \"n_layer\": %d,\n  \"n_ctx\": %u,\n  \"n_threads\": %d,\n", n_embd, n_layer,
                llama_n_ctx(ctx), params.cpuparams.n_threads);
        fprintf(f, "  \"control_vectors\": [");
        for (size_t i = 0; i < params.control_vectors.size(); i++) {
            std::string fname = params.control_vectors[i].fname;
            std::string esc;
            for (char c : fname) {
                if (c == '"' || c == '\\') {
                    esc += '\\';
                }
                esc += c;
            }
            fprintf(f, "%s{\"file\": \"%s\", \"strength\": %.9g}", i ? ", " : "", esc.c_str(),
                    params.control_vectors[i].strength);
        }
        fprintf(f, "],\n  \"control_vector_layer_range\": [%d, %d],\n", params.control_vector_layer_start,
                params.control_vector_layer_end);
        fprintf(f, "  \"greedy\": [");
        for (size_t p = 0; p < greedy.size(); p++) {
            fprintf(f, "%s[", p ? ", " : "");
            for (size_t k = 0; k < greedy[p].size(); k++) {
                fprintf(f, "%s%d", k ? ", " : "", greedy[p][k]);
            }
            fprintf(f, "]");
        }
        fprintf(f, "],\n");
        fprintf(f,
                "  \"timing\": {\"load_s\": %.6f, \"prompt_s\": %.6f, \"generate_s\": %.6f, "
                "\"prompt_tokens\": %lld, \"generated_decodes\": %lld}\n}\n",
                t_load, t_prompt, t_gen, n_prompt_tok, n_gen_tok);
        fclose(f);
    }

    init.reset();
    llama_backend_free();
    return 0;
}
