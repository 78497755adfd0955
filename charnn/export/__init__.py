"""`charnn export`: a trained model for use outside charnn.

- export.formats: which formats there are, and writing one;
- export.hf: a folder for the Hugging Face Hub (safetensors, config.json, a model card);
- export.onnx: one step of the model as an ONNX graph, for runtimes in other languages;
- export.web: one self-contained HTML page that generates in the browser, with the JavaScript
  stepper stepper.js (every cell);
- export.ml5: the folder ml5.js's charRNN loads (2-layer LSTM and cifg models).
"""
