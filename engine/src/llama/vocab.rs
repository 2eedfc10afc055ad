//! A model file's vocabulary and chat template without its weights: what a
//! caller of a pipeline needs to turn messages into token ids and picked
//! ids back into text, while the stages hold the layers.

use std::path::Path;

use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::{backend, chat_prompt, chat_template, GenRequest};
use crate::template::ChatTemplate;
use crate::RequestError;

/// Tokenizer, detokenizer and chat template of one GGUF file.
pub struct Vocabulary {
    model: LlamaModel,
    template: ChatTemplate,
    end_of_generation: Vec<u32>,
}

impl Vocabulary {
    /// Reads the vocabulary of `path` (blocking; no tensors are loaded).
    pub fn load(path: &Path) -> Result<Self, String> {
        let backend = backend()?;
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model =
            LlamaModel::load_from_file(&backend, path, &params).map_err(|e| e.to_string())?;
        let template = chat_template(&model)?;
        let vocab = model.vocab();
        let end_of_generation = (0..vocab.n_tokens())
            .filter(|&t| vocab.is_eog(LlamaToken(t)))
            .map(|t| t as u32)
            .collect();
        Ok(Self {
            model,
            template,
            end_of_generation,
        })
    }

    /// The token ids of a chat prompt (template applied, assistant turn opened).
    pub fn prompt(&self, request: &GenRequest) -> Result<Vec<u32>, RequestError> {
        chat_prompt(&self.model, &self.template, request)
    }

    /// The bytes `token` stands for in generated text (none for control tokens).
    pub fn piece(&self, token: u32) -> Vec<u8> {
        self.model
            .vocab()
            .token_to_piece(LlamaToken(token as i32), false, None)
    }

    /// Tokens that end a generation.
    pub fn end_of_generation(&self) -> &[u32] {
        &self.end_of_generation
    }
}
