"""Pure numerics: tensors, quantize/dequantize, what an image input is. Imports
nothing else of edged.
"""
